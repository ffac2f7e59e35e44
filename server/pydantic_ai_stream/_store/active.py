"""A user's active set: the sessions with a run queued or running."""

from __future__ import annotations

from collections.abc import Sequence

from .._core.entry import Entry, decode
from .._core.keys import SessionKeys
from .._core.names import BEGIN
from .redis import AsyncRedis
from .results import ActiveRun, ActiveState
from .scripts import session

__all__ = ["active_members", "active_sessions"]


async def active_sessions(redis: AsyncRedis, keys: Sequence[SessionKeys]) -> list[ActiveRun]:
    """Of the given sessions (one user's active set), those with a queued or live, uncancelled run; drops
    dead ones.

    The drop runs in the same script as the check, so a session that starts again meanwhile is kept.
    """
    if not keys:
        return []
    active = []
    for k, (state, run) in zip(keys, await session.prune(redis, keys), strict=True):
        if state in (ActiveState.LIVE, ActiveState.QUEUED, ActiveState.RESUMING, ActiveState.WAITING):
            run_id, _, attempt = run.partition(":")  # the lease of attempt n > 1: `<run id>:<n>`
            resuming, waiting = state is ActiveState.RESUMING, state is ActiveState.WAITING
            queued = state in (ActiveState.QUEUED, ActiveState.RESUMING)
            active.append(
                ActiveRun(
                    k.session_id, run_id, queued=queued, attempt=int(attempt or 1), resuming=resuming, waiting=waiting
                )
            )
    return await _with_begins(redis, active, {k.session_id: k for k in keys})


async def _with_begins(redis: AsyncRedis, runs: list[ActiveRun], keys: dict[str, SessionKeys]) -> list[ActiveRun]:
    """`runs` with their agent and start time, from their `begin`s (a run whose `begin` was trimmed away: its
    start time from the session's runs, no agent)."""
    if not runs:
        return runs
    async with redis.pipeline(transaction=False) as pipe:
        for run in runs:
            pipe.xrange(keys[run.session_id].stream, count=1)  # a session's stream begins with its run's `begin`
            pipe.hget(keys[run.session_id].runs, run.run_id)
        replies = await pipe.execute()
    described = []
    for run, first, begin_id in zip(runs, replies[::2], replies[1::2], strict=True):
        begin = Entry.from_redis(*first[0]) if first else None
        if begin is not None and begin.type == BEGIN and begin.body.get("run_id") == run.run_id:
            agent, begin_id = begin.body.get("agent"), begin.id
        else:
            agent = None
        started_ms = int(decode(begin_id).split("-")[0]) if begin_id else 0
        described.append(run._replace(agent=agent if isinstance(agent, str) else "", started_ms=started_ms))
    return described


async def active_members(redis: AsyncRedis, active_key: str) -> list[str]:
    """Session ids in a user's active set, oldest run first (may include runs that died)."""
    members = await redis.zrange(active_key, 0, -1)
    return [decode(m) for m in members if isinstance(m, bytes | str)]
