"""The durable runs' Lua scripts (the `.lua` files beside this module), each behind a call with named arguments.

The run queue's keys (`QueueKeys`) share one hash tag, so each script touches one slot of a Redis Cluster; so
does the fleet's one hash. Each `.lua` file's header states its KEYS, ARGV and replies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

from ..._core.keys import QueueKeys
from ..._store.redis import AsyncRedis
from ..._store.scripts import LuaScript

__all__ = ["Reservation", "add_job", "advertise", "claim_jobs", "live_agents", "reserve", "unclaimed_jobs"]


class Reservation(IntEnum):
    """What `reserve` did with a run."""

    FULL = 0
    """The scope has its limit of queued runs already: the run is not counted."""
    COUNTED = 1
    """The run counts as queued (again, if it did already)."""


_RESERVE = LuaScript.load(__name__, "reserve", codes=[Reservation])
_ADD_JOB = LuaScript.load(__name__, "add_job")
_CLAIM = LuaScript.load(__name__, "claim")
_UNCLAIMED = LuaScript.load(__name__, "unclaimed")
_ADVERTISE = LuaScript.load(__name__, "advertise")
_LIVE_AGENTS = LuaScript.load(__name__, "live_agents")


async def reserve(
    redis: AsyncRedis, keys: QueueKeys, *, scope_id: int, member: str, limit: int, now_ms: int, wait_ms: int
) -> Reservation:
    """Count the run `member` in its scope's queued runs until `wait_ms` after `now_ms`, unless the scope has
    `limit` runs queued already."""
    reply = await _RESERVE(redis, keys=[keys.queued(scope_id)], args=[member, limit, now_ms, wait_ms])
    return Reservation(int(reply))


async def add_job(redis: AsyncRedis, keys: QueueKeys, *, scope_id: int, fields: Mapping[str, str]) -> None:
    """Add a job (its `fields`) to its scope's job stream; the scope takes its turn if it had none, and one worker
    waiting for jobs wakes."""
    args = [item for pair in fields.items() for item in pair]
    await _ADD_JOB(redis, keys=[keys.jobs(scope_id), keys.scopes, keys.turn, keys.ready], args=args)


async def claim_jobs(
    redis: AsyncRedis, keys: QueueKeys, *, group: str, consumer: str, count: int
) -> list[tuple[Any, dict[Any, Any]]]:
    """Up to `count` jobs, now `consumer`'s in `group` of the queue, in the scopes' turns: each one's entry id
    and fields."""
    entries = await _CLAIM(redis, keys=[keys.queue, keys.scopes, keys.turn, keys.ready], args=[group, consumer, count])
    return [(entry_id, _pairs(fields)) for entry_id, fields in entries]


async def unclaimed_jobs(redis: AsyncRedis, keys: QueueKeys, *, group: str) -> int:
    """The jobs no worker of `group` has claimed yet: in the scopes' job streams, and in the queue not delivered."""
    return int(await _UNCLAIMED(redis, keys=[keys.queue, keys.scopes], args=[group]))


async def advertise(redis: AsyncRedis, *, workers: str, worker: str, ttl_ms: int, agents: str) -> None:
    """Write `worker`'s field in the fleet's hash `workers` (its `agents`, a JSON list) to live `ttl_ms`, and
    delete the fields that lapsed."""
    await _ADVERTISE(redis, keys=[workers], args=[worker, ttl_ms, agents])


async def live_agents(redis: AsyncRedis, *, workers: str) -> list[bytes | str]:
    """The agents (a JSON list each) of the workers whose field in the fleet's hash `workers` has not lapsed."""
    return list(await _LIVE_AGENTS(redis, keys=[workers], args=[]))


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    """A stream entry's fields as a script returns them (field, value, field, value...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
