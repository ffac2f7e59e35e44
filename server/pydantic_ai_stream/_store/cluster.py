"""Calls for many sessions at once: one script call on one Redis, one per session on a Redis Cluster (whose
scripts cannot span slots), sent together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .redis import AsyncRedis, dump_body, is_cluster
from .results import PendingEntry, Renewal
from .scripts import session
from .stream import EXPIRED_BODY, LOST_BODY, SessionStream

__all__ = ["append_many", "reap_many", "renew_many"]

_T = TypeVar("_T")
_R = TypeVar("_R")


async def _per_slot(
    redis: AsyncRedis, items: Sequence[_T], call: Callable[[Sequence[_T]], Awaitable[list[_R]]]
) -> list[_R]:
    """`call` for all `items` in one script call; on a Redis Cluster, whose scripts cannot span slots, one
    call per item, sent together."""
    if not is_cluster(redis):
        return await call(items)
    each = await asyncio.gather(*(call([item]) for item in items))
    return [result for results in each for result in results]


async def append_many(
    redis: AsyncRedis, writes: Sequence[tuple[SessionStream, str, str, Sequence[PendingEntry]]]
) -> list[str | None]:
    """Append to several sessions' streams in one script call, each fenced by its run's lease.

    `writes` holds `(stream, run_id, after, entries)`, `after` being the last entry id that run wrote
    (a re-sent call finds its entries written and writes nothing twice); returns per write the last
    entry id, or `None` if `run_id` no longer holds that session (nothing was written there).
    """

    def call(part: Sequence[tuple[SessionStream, str, str, Sequence[PendingEntry]]]) -> Awaitable[list[str | None]]:
        batch = [
            (stream.keys, run_id, after, [(type_, origin, dump_body(body)) for type_, origin, body in entries])
            for stream, run_id, after, entries in part
        ]
        return session.append(redis, batch, maxlen=part[0][0].maxlen, retention_ms=part[0][0].retention_ms)

    return await _per_slot(redis, writes, call)


async def renew_many(
    redis: AsyncRedis, leases: Sequence[tuple[SessionStream, str, bool]], *, lease_ms: int, wait_ms: int
) -> list[Renewal]:
    """Extend several runs' leases (and their streams' retention) in one script call; the runs waiting behind
    them, and a durable run's record, `wait_ms` past now.

    `leases` holds `(stream, run_id, durable)`.
    """

    def call(part: Sequence[tuple[SessionStream, str, bool]]) -> Awaitable[list[Renewal]]:
        batch = [(stream.keys, run_id, durable) for stream, run_id, durable in part]
        return session.renew(redis, batch, lease_ms=lease_ms, retention_ms=part[0][0].retention_ms, wait_ms=wait_ms)

    return await _per_slot(redis, leases, call)


async def reap_many(redis: AsyncRedis, streams: Sequence[SessionStream], *, grace_ms: int) -> list[int | None]:
    """`reap` for several sessions in one script call: per session `None` if it ended the stream, else the ms
    its run lives on at least (0: not known)."""

    def call(part: Sequence[SessionStream]) -> Awaitable[list[int | None]]:
        keys = [stream.keys for stream in part]
        return session.reap(
            redis, keys, maxlen=part[0].maxlen, grace_ms=grace_ms, error=LOST_BODY, expired=EXPIRED_BODY
        )

    return await _per_slot(redis, streams, call)
