"""`Runtime`: the one owner of what a process runs in the background for its streams on a Redis client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from typing_extensions import Unpack

from .._core.keys import ConversationKeys, SessionKeys, TaskKeys, active_key
from .._core.settings import Settings, settings
from .._core.submission import RunOptions, Submitted
from .._durable.queue import RunQueue
from .._read.handle import SessionHandle, live_sessions
from .._read.hub import StreamHub
from .._store.redis import AsyncRedis, SessionStream, is_cluster
from .._write.lease import LeaseKeeper
from .._write.writer import WriteCombiner
from .admission import accept, run_ended

if TYPE_CHECKING:
    from .._edges.telemetry import Telemetry

__all__ = ["Runtime", "conversation_keys", "q", "session_keys"]

T = TypeVar("T")


@dataclass(eq=False, kw_only=True)
class Runtime:
    """The shared reader (`StreamHub`), the write batching (`WriteCombiner`) and the lease keeper
    (`LeaseKeeper`) of one Redis client: each starts its tasks on first use.

    Use it as `async with Runtime(redis=client) as runtime:` and hand it to `Deps(runtime=...)`: on exit,
    pending writes are flushed, every task its parts started is stopped and every connection of their
    own is closed. The published API (`Deps` without a runtime, `run`, `listen`) uses
    `Runtime.default(client)`, one per client and event loop, which forgets itself once all its parts
    are idle, so it keeps no client alive.
    """

    redis: AsyncRedis
    settings: Settings = field(default_factory=lambda: settings)
    """Lease timing and the key prefix its parts use (the process-wide `settings` by default)."""
    telemetry: Telemetry | None = None
    """Where its parts report traces and metrics (the `otel` extra); `None`: nowhere, at no cost."""
    hub: StreamHub | None = field(init=False)
    """The shared reader; `None` on a Redis Cluster, where each listener reads on its own."""
    writes: WriteCombiner = field(init=False)
    leases: LeaseKeeper = field(init=False)
    _default: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        redis = self.redis
        self.hub = (
            None if is_cluster(redis) else StreamHub(redis=redis, settings=self.settings, on_idle=self._part_idle)
        )
        self.writes = WriteCombiner(redis=self.redis, on_idle=self._part_idle, telemetry=self.telemetry)
        if self.telemetry is not None:
            self.telemetry.observe_queue(lambda: self.queue.waiting())
        self.leases = LeaseKeeper(redis=self.redis, settings=self.settings, on_idle=self._part_idle)

    @classmethod
    def default(cls, redis: AsyncRedis) -> Runtime:
        """The runtime of `redis` on the running loop for callers that bring none, created on first use."""
        return _defaults.get(redis)

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
        if self._default:
            _defaults.drop(self)

    def keys(self, *, scope_id: int, user_id: int, session_id: str) -> SessionKeys:
        """The keys of a session under this runtime's prefix; raises `InvalidIdError` for unsafe ids."""
        return session_keys(self.settings, self.redis, scope_id=scope_id, user_id=user_id, session_id=session_id)

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

    async def run_ended(self, stream: SessionStream, *, queued: str | None = None) -> None:
        """A run of the session of `stream` ended, as this process saw: the run waiting behind it starts
        (`admission.run_ended`)."""
        await run_ended(self.queue, stream, queued=queued)

    def active_key(self, *, scope_id: int, user_id: int) -> str:
        """The sorted set of a user's sessions with a run."""
        prefix, tags = self.settings.redis_prefix, _hash_tags(self.settings, self.redis)
        return active_key(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=tags)

    def task_keys(self, *, scope_id: int, user_id: int) -> TaskKeys:
        """The keys of a user's A2A tasks."""
        prefix, tags = self.settings.redis_prefix, _hash_tags(self.settings, self.redis)
        return TaskKeys.build(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=tags)

    @property
    def idle(self) -> bool:
        """Whether no part has a task running."""
        return self.writes.idle and self.leases.idle and (self.hub is None or self.hub.idle)

    def _part_idle(self) -> None:
        if self._default and self.idle:
            _defaults.drop(self)


def session_keys(settings: Settings, redis: AsyncRedis, *, scope_id: int, user_id: int, session_id: str) -> SessionKeys:
    """A session's keys under `settings` for `redis`; needs no runtime (nor a running loop)."""
    return SessionKeys.build(
        prefix=settings.redis_prefix,
        scope_id=scope_id,
        user_id=user_id,
        session_id=session_id,
        hash_tags=_hash_tags(settings, redis),
    )


def conversation_keys(settings: Settings, redis: AsyncRedis, *, scope_id: int, user_id: int) -> ConversationKeys:
    """A user's conversation keys under `settings` for `redis`."""
    return ConversationKeys.build(
        prefix=settings.redis_prefix, scope_id=scope_id, user_id=user_id, hash_tags=_hash_tags(settings, redis)
    )


def _hash_tags(settings: Settings, redis: AsyncRedis) -> bool:
    """Whether keys get Redis Cluster hash tags: the setting, or else whether `redis` is a cluster's client."""
    return settings.cluster_hash_tags if settings.cluster_hash_tags is not None else is_cluster(redis)


class PerClient(Generic[T]):
    """One `T` per (Redis client, running loop), created on first use.

    Keyed by the client's identity, not equality (cluster clients compare equal by their nodes), and
    checked against the client it was made for, since an identity can be reused once a client is gone.
    """

    def __init__(self, make: Callable[[Any], T], client_of: Callable[[T], Any]) -> None:
        self._make, self._client_of = make, client_of
        self._items: dict[tuple[int, int], T] = {}

    def get(self, redis: Any) -> T:
        key = (id(redis), id(asyncio.get_running_loop()))
        item = self._items.get(key)
        if item is None or self._client_of(item) is not redis:
            item = self._items[key] = self._make(redis)
        return item

    def drop(self, item: T) -> None:
        """Forget `item` (it has nothing left to do); the next `get` makes a new one."""
        for key, held in list(self._items.items()):
            if held is item:
                del self._items[key]


_defaults = PerClient(lambda redis: Runtime(redis=redis, _default=True), lambda runtime: runtime.redis)


async def q(
    redis: AsyncRedis, scope_id: int, user_id: int, *, runtime: Runtime | None = None
) -> AsyncGenerator[tuple[int, int, str], None]:
    """Yield `(scope_id, user_id, session_id)` for each live session of the user, oldest first.

    Keys follow `runtime`'s settings (default: `Runtime.default(redis)`'s, the process-wide `settings`).
    """
    runtime = runtime if runtime is not None else Runtime.default(redis)
    for active in await live_sessions(runtime, scope_id=scope_id, user_id=user_id):
        yield scope_id, user_id, active.session_id
