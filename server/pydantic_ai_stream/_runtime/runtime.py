"""`Runtime`: the one owner of what a process runs in the background for its streams on a Redis client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from typing_extensions import Unpack

from .._core.deferred import Responded, ToolAnswer
from .._core.keys import SessionKeys, TaskKeys, active_key
from .._core.metrics import NO_METRICS, Metrics
from .._core.settings import Settings
from .._core.submission import RunOptions, Submitted
from .._durable.answers import respond
from .._durable.queue import RunQueue
from .._read.handle import SessionHandle
from .._read.hub import StreamHub
from .._store.redis import AsyncRedis, is_cluster
from .._store.stream import SessionStream
from .._write.lease import LeaseKeeper
from .._write.live import LiveRun
from .._write.writer import WriteCombiner
from .admission import accept, run_ended

__all__ = ["Runtime"]


@dataclass(eq=False, kw_only=True)
class Runtime:
    """The shared reader (`StreamHub`), the write batching (`WriteCombiner`) and the lease keeper
    (`LeaseKeeper`) of one Redis client: each starts its tasks on first use. A run is opened on it as
    `async with runtime.open_run(keys) as live:`, which ends the run with the block.

    Use it as `async with Runtime(redis=client) as runtime:` and hand it to `Deps(runtime=...)`: on exit,
    the runs `start_run` left running are cancelled and awaited, pending writes are flushed, every task its
    parts started is stopped and every connection of their own is closed. The published API (`Deps`
    without a runtime, `run`, `listen`) uses a default runtime per client and event loop
    (`compat.default_runtime`), which forgets itself once all its parts are idle, so it keeps no client alive.
    """

    redis: AsyncRedis
    settings: Settings = field(default_factory=Settings)
    """Lease timing and the key prefix its parts use (by default read from `PYDANTIC_AI_STREAM_*`)."""
    telemetry: Metrics | None = None
    """Where its parts report traces and metrics (a `Telemetry`, the `otel` extra); `None`: nowhere, at no cost."""
    hub: StreamHub | None = field(init=False)
    """The shared reader; `None` on a Redis Cluster, where each listener reads on its own."""
    writes: WriteCombiner = field(init=False)
    leases: LeaseKeeper = field(init=False)
    _forget: Callable[[Runtime], None] | None = field(default=None, repr=False)
    """Called once its parts are idle or it is closed: the registry of default runtimes lets go of it."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    """The runs `start_task` started, until each is done."""

    def __post_init__(self) -> None:
        redis = self.redis
        self.hub = (
            None if is_cluster(redis) else StreamHub(redis=redis, settings=self.settings, on_idle=self._part_idle)
        )
        self.writes = WriteCombiner(redis=self.redis, on_idle=self._part_idle, metrics=self.metrics)
        self.metrics.observe_queue(lambda: self.queue.waiting())
        self.leases = LeaseKeeper(
            redis=self.redis, settings=self.settings, queue=lambda: self.queue, on_idle=self._part_idle
        )

    @property
    def metrics(self) -> Metrics:
        """Where its parts report: its `telemetry`, or `NO_METRICS`."""
        return self.telemetry if self.telemetry is not None else NO_METRICS

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the runs it owns (cancelled), flush pending writes, then stop every task and close every
        connection the parts opened."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.metrics.observe_queue(None)  # a scrape after this must not open a connection
        await self.writes.aclose()
        await asyncio.gather(self.leases.aclose(), *([self.hub.aclose()] if self.hub else []))
        if self._forget is not None:
            self._forget(self)

    @contextlib.asynccontextmanager
    async def open_run(
        self, keys: SessionKeys, *, run_id: str | None = None, body: Mapping[str, Any] | None = None
    ) -> AsyncIterator[LiveRun]:
        """A run of the session with `keys` for the block (`LiveRun.open`: `SessionBusyError`,
        `RunExistsError`), ended as `end_run` says when the block ends."""
        live = await LiveRun.open(self, keys, run_id=run_id, body=body)
        async with self.owning(live):
            yield live

    @contextlib.asynccontextmanager
    async def owning(self, live: LiveRun) -> AsyncIterator[LiveRun]:
        """Hold `live` (opened, or adopted from the run queue) for the block; `end_run` when it ends."""
        try:
            yield live
        finally:
            await self.end_run(live)

    async def end_run(self, live: LiveRun, *, grace_ms: int | None = None) -> None:
        """Write `live`'s `end` (or hand it back to the queue), release its lease, keep its stream `grace_ms`
        (default: `stream_retention`), then start the run waiting behind it."""
        waiting = await live.close(grace_ms=self.settings.stream_retention * 1000 if grace_ms is None else grace_ms)
        if waiting and not live.handing_back:
            await self.run_ended(live.lease.stream)  # a run waiting behind this one starts

    def start_task(self, run: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """`run` (the rest of a run `start_run` opened) as a task this runtime owns: `aclose` cancels it
        (the run ends cancelled) and waits for it."""
        task = asyncio.create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._part_idle()

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

    async def submit(self, handle: SessionHandle, *, agent: str, **options: Unpack[RunOptions]) -> Submitted:
        """The admission of `SessionHandle.submit`: the run queue under this runtime's prefix takes the run
        (`admission.accept`)."""
        return await accept(handle, self.queue, agent=agent, **options)

    async def respond(self, handle: SessionHandle, *, run_id: str, answers: Sequence[ToolAnswer]) -> Responded:
        """The answers of `SessionHandle.respond`, given to the run queue under this runtime's prefix."""
        return await respond(self.queue, handle.stream, run_id, answers)

    async def run_ended(self, stream: SessionStream, *, queued: str | None = None) -> None:
        """A run of the session of `stream` ended, as this process saw: the run waiting behind it starts
        (`admission.run_ended`)."""
        await run_ended(self.queue, stream, queued=queued)

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
        """Whether no part (nor a run it owns) has a task running."""
        return not self._tasks and self.writes.idle and self.leases.idle and (self.hub is None or self.hub.idle)

    def _part_idle(self) -> None:
        if self._forget is not None and self.idle:
            self._forget(self)
