"""A user's active set: the sessions with a run queued or running."""

from __future__ import annotations

from collections.abc import Sequence

from .._core.entry import decode
from .._core.keys import SessionKeys
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
    return active


async def active_members(redis: AsyncRedis, active_key: str) -> list[str]:
    """Session ids in a user's active set, oldest run first (may include runs that died)."""
    members = await redis.zrange(active_key, 0, -1)
    return [decode(m) for m in members if isinstance(m, bytes | str)]
