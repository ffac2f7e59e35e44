"""The published (0.1.1) API's process-wide names, kept in one place: `settings`, the default runtime of a
client that `Deps` without a runtime, `run` and `q` use, `q` itself and `AgxCanceledError`.

`settings` is read from `PYDANTIC_AI_STREAM_*` once, here, and only the default runtimes (and a server
started without settings of its own) use it; everything else is given its settings. The other published
names are methods of their classes: `Settings.set_redis_prefix`, `Deps.key_live`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from .._core.errors import AgxCanceledError
from .._core.settings import Settings
from .._read.handle import live_sessions
from .._store.redis import AsyncRedis
from .runtime import Runtime

__all__ = ["AgxCanceledError", "default_runtime", "q", "settings", "settings_of"]

settings = Settings()
"""The process-wide settings of the published API (`settings.set_redis_prefix("myapp")`)."""


class _DefaultRuntimes:
    """One `Runtime` per (Redis client, running loop) under `settings`, made on first use and let go of
    once its parts are idle, so that it keeps no client alive.

    Keyed by the client's identity, not equality (cluster clients compare equal by their nodes), and
    checked against the client it was made for, since an identity can be reused once a client is gone.
    """

    def __init__(self) -> None:
        self._runtimes: dict[tuple[int, int], Runtime] = {}

    def get(self, redis: AsyncRedis) -> Runtime:
        key = (id(redis), id(asyncio.get_running_loop()))
        runtime = self._runtimes.get(key)
        if runtime is None or runtime.redis is not redis:
            runtime = self._runtimes[key] = Runtime(redis=redis, settings=settings, _forget=self._drop)
        return runtime

    def _drop(self, runtime: Runtime) -> None:
        for key, held in list(self._runtimes.items()):
            if held is runtime:
                del self._runtimes[key]


_defaults = _DefaultRuntimes()


def default_runtime(redis: AsyncRedis) -> Runtime:
    """The runtime of `redis` on the running loop for callers that bring none, created on first use."""
    return _defaults.get(redis)


def settings_of(runtime: Runtime | None) -> Settings:
    """`runtime`'s settings; without one, those of the default runtimes (needs no running loop)."""
    return runtime.settings if runtime is not None else settings


async def q(
    redis: AsyncRedis, scope_id: int, user_id: int, *, runtime: Runtime | None = None
) -> AsyncGenerator[tuple[int, int, str], None]:
    """Yield `(scope_id, user_id, session_id)` for each live session of the user, oldest first.

    Keys follow `runtime`'s settings (default: the default runtime's, the process-wide `settings`).
    """
    runtime = runtime if runtime is not None else default_runtime(redis)
    for active in await live_sessions(runtime, scope_id=scope_id, user_id=user_id):
        yield scope_id, user_id, active.session_id
