"""`Runtime`: the one owner of what a process runs in the background for its streams on a Redis client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from .._core.keys import SessionKeys, TaskKeys, active_key
from .._core.settings import Settings
from .._durable.queue import RunQueue
from .._read.hub import StreamHub
from .._store.redis import AsyncRedis, is_cluster
from .._store.stream import SessionStream
from .._write.lease import LeaseKeeper
from .._write.writer import WriteCombiner

if TYPE_CHECKING:
    from .._edges.telemetry import Telemetry

__all__ = ["Runtime"]


@dataclass(eq=False, kw_only=True)
class Runtime:
    """The shared reader (`StreamHub`), the write batching (`WriteCombiner`) and the lease keeper
    (`LeaseKeeper`) of one Redis client: each starts its tasks on first use.

    Use it as `async with Runtime(redis=client) as runtime:` and hand it to `Deps(runtime=...)`: on exit,
    pending writes are flushed, every task its parts started is stopped and every connection of their
    own is closed. The published API (`Deps` without a runtime, `run`, `listen`) uses a default runtime
    per client and event loop (`compat.default_runtime`), which forgets itself once all its parts are
    idle, so it keeps no client alive.
    """

    redis: AsyncRedis
    settings: Settings = field(default_factory=Settings)
    """Lease timing and the key prefix its parts use (by default read from `PYDANTIC_AI_STREAM_*`)."""
    telemetry: Telemetry | None = None
    """Where its parts report traces and metrics (the `otel` extra); `None`: nowhere, at no cost."""
    hub: StreamHub | None = field(init=False)
    """The shared reader; `None` on a Redis Cluster, where each listener reads on its own."""
    writes: WriteCombiner = field(init=False)
    leases: LeaseKeeper = field(init=False)
    _forget: Callable[[Runtime], None] | None = field(default=None, repr=False)
    """Called once its parts are idle or it is closed: the registry of default runtimes lets go of it."""

    def __post_init__(self) -> None:
        redis = self.redis
        self.hub = (
            None if is_cluster(redis) else StreamHub(redis=redis, settings=self.settings, on_idle=self._part_idle)
        )
        self.writes = WriteCombiner(redis=self.redis, on_idle=self._part_idle, telemetry=self.telemetry)
        if self.telemetry is not None:
            self.telemetry.observe_queue(lambda: self.queue.waiting())
        self.leases = LeaseKeeper(redis=self.redis, settings=self.settings, on_idle=self._part_idle)

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush pending writes, then stop every task and close every connection the parts opened."""
        if self.telemetry is not None:
            self.telemetry.observe_queue(None)  # a scrape after this must not open a connection
        await self.writes.aclose()
        await asyncio.gather(self.leases.aclose(), *([self.hub.aclose()] if self.hub else []))
        if self._forget is not None:
            self._forget(self)

    def keys(self, *, scope_id: int, user_id: int, session_id: str) -> SessionKeys:
        """The keys of a session under this runtime's prefix; raises `InvalidIdError` for unsafe ids."""
        cluster = is_cluster(self.redis)
        return self.settings.session_keys(cluster=cluster, scope_id=scope_id, user_id=user_id, session_id=session_id)

    def stream(self, keys: SessionKeys) -> SessionStream:
        """The Redis side of the session with `keys`, trimmed and kept as this runtime's settings say."""
        return SessionStream(
            redis=self.redis,
            keys=keys,
            maxlen=self.settings.stream_maxlen,
            retention_ms=self.settings.stream_retention * 1000,
        )

    @property
    def queue(self) -> RunQueue:
        """The run queue under this runtime's prefix, bounded as its settings say."""
        return RunQueue.of(self.redis, self.settings)

    def active_key(self, *, scope_id: int, user_id: int) -> str:
        """The sorted set of a user's sessions with a run."""
        prefix, tags = self.settings.redis_prefix, self.settings.hash_tags(cluster=is_cluster(self.redis))
        return active_key(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=tags)

    def task_keys(self, *, scope_id: int, user_id: int) -> TaskKeys:
        """The keys of a user's A2A tasks."""
        prefix, tags = self.settings.redis_prefix, self.settings.hash_tags(cluster=is_cluster(self.redis))
        return TaskKeys.build(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=tags)

    @property
    def idle(self) -> bool:
        """Whether no part has a task running."""
        return self.writes.idle and self.leases.idle and (self.hub is None or self.hub.idle)

    def _part_idle(self) -> None:
        if self._forget is not None and self.idle:
            self._forget(self)
