"""The Redis client as the store uses it: its type, its replies' shapes, a connection of one's own."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from typing_extensions import TypeIs

__all__ = ["AsyncRedis", "RawEntry", "dump_body", "is_cluster", "own_pool", "xread_entries_by_key"]

AsyncRedis: TypeAlias = "Redis | RedisCluster"
RawEntry: TypeAlias = tuple[bytes | str, dict[Any, Any]]


def is_cluster(redis: AsyncRedis) -> TypeIs[RedisCluster]:
    """Whether `redis` is a Redis Cluster client: the one place plain and cluster clients part ways."""
    return isinstance(redis, RedisCluster)


def own_pool(redis: Redis, **changed: Any) -> ConnectionPool:
    """A pool of one connection with `redis`'s settings (but `changed`), for a blocking read that must not hold
    one of the shared pool's connections."""
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, **changed}
    return ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs)


def xread_entries_by_key(reply: Any) -> list[tuple[bytes | str, list[RawEntry]]]:
    """An `XREAD` reply as `[(stream key, [(entry id, fields), ...]), ...]`, for RESP2 and RESP3."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {key: [[(id, fields), ...]]}
        return [(key, [entry for entries in groups for entry in entries]) for key, groups in reply.items()]
    return [(key, list(entries)) for key, entries in reply]  # RESP2: [[key, [(id, fields), ...]]]


# UTF-8 as is: ASCII escapes would triple non-Latin text (é -> \u00e9) past clients' message limits. One
# encoder for every body: `json.dumps` with options builds a new one per call.
_BODY_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False)


def dump_body(body: Mapping[str, Any] | None) -> str:
    """An entry's body as the stream keeps it (JSON)."""
    if body is not None and not isinstance(body, dict):
        body = dict(body)  # `json` dumps no other mapping: it would write its `str`
    return _BODY_ENCODER.encode(body or {})
