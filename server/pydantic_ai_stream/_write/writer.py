"""Stream writers: each run's entries in order, every run of the process sharing its round trips.

A `StreamWriter` queues its run's entries on its runtime's `WriteCombiner` (one per `Runtime`, the
owner of its task). The combiner keeps one write in flight: the first entry of a burst is sent at
once, and whatever any run adds meanwhile goes together in the next write, one script call for
every stream with entries waiting (each stream fenced by its own run's lease), sent `linger` after
the one before at the earliest (at once when a run flushes). So a token after a pause is written at
once, runs streaming faster than one write per `linger` share a round trip among their tokens, and a
thousand runs streaming at once share theirs instead of queueing a thousand of them.
On a Redis Cluster, whose scripts cannot span slots, the next write is one call per stream, sent together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._core.aio import resolve
from .._core.errors import LeaseLostError
from .._core.metrics import NO_METRICS, Metrics
from .._store.cluster import append_many
from .._store.redis import AsyncRedis
from .._store.results import PendingEntry
from .._store.stream import SessionStream

__all__ = ["StreamWriter", "WriteCombiner"]

MAX_ENTRIES_PER_WRITE = 5000
"""Entries one write carries at most; the rest go in the next."""


@dataclass(eq=False, kw_only=True)
class StreamWriter:
    """Appends one run's entries to its stream under its lease; errors surface at the next call."""

    stream: SessionStream
    run_id: str
    combiner: WriteCombiner
    """The process's writes to the stream's Redis client, which this writer's go with."""
    last_id: str
    """The last entry this run is known to have written (its `begin` at first)."""
    max_pending: int = 1000
    """Entries that may wait for the write in flight before `add` waits too (backpressure)."""

    _pending: list[PendingEntry] = field(default_factory=list)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        self._idle.set()

    async def add(self, type_: str, origin: str, body: Mapping[str, Any] | None) -> None:
        """Queue an entry; it is written with the next round trip, in order."""
        if self.queue(type_, origin, body):
            await self.flush()

    def queue(self, type_: str, origin: str, body: Mapping[str, Any] | None) -> bool:
        """`add` without waiting: whether the caller is to `flush` now (too much waits: backpressure)."""
        self._raise_error()
        pending = self._pending
        pending.append((type_, origin, body))
        if len(pending) == 1:
            self._idle.clear()
            self.combiner.schedule(self)
        return len(pending) >= self.max_pending

    async def flush(self) -> None:
        """Wait until every queued entry is written; raises the write's error if one failed."""
        if self._pending:
            self.combiner.hurry()
        await self._idle.wait()  # a cancelled caller leaves the write itself to the combiner
        self._raise_error()

    def take(self, limit: int) -> list[PendingEntry]:
        """The combiner takes up to `limit` queued entries for the next write."""
        taken, self._pending = self._pending[:limit], self._pending[limit:]
        return taken

    def written(self, entry_id: str | None, error: BaseException | None) -> None:
        """The combiner reports a write of this writer's entries: its last id, or how it failed."""
        if entry_id is not None:
            self.last_id = entry_id
        if error is not None and self._error is None:
            self._error = error
            self._pending.clear()  # nothing after a failed write may be written
        if not self._pending:
            self._idle.set()

    @property
    def waiting(self) -> bool:
        return bool(self._pending) and self._error is None

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


@dataclass(eq=False, kw_only=True)
class WriteCombiner:
    """The process's writes to one Redis client: one in flight, carrying every waiting run's entries."""

    redis: AsyncRedis
    on_idle: Callable[[], None] = lambda: None
    """Called when no write is left in flight or waiting."""
    metrics: Metrics = NO_METRICS
    """Counts the entries written and the writes that failed."""
    linger: float = 0.005
    """Seconds from a write's start to the next one's at the earliest, unless a run flushes: what comes
    meanwhile goes in one round trip (~100 µs of the client's CPU and 3 Redis commands; an entry, a few µs
    and its `XADD`)."""
    _waiting: dict[StreamWriter, None] = field(default_factory=dict)
    """Writers with entries to write, in the order they asked (a dict as an ordered set)."""
    _task: asyncio.Task[None] | None = None
    _sent_at: float = float("-inf")
    """When the last write was sent (the event loop's clock)."""
    _lingering: asyncio.Future[None] | None = None
    _hurried: bool = False
    """A run waits for its entries: the next write goes without lingering."""

    def schedule(self, writer: StreamWriter) -> None:
        """Have `writer`'s queued entries go with the next write (now, if none is in flight)."""
        self._waiting[writer] = None
        if self._task is None:
            self._task = asyncio.create_task(self._write_waiting())

    def hurry(self) -> None:
        """Send what waits now, without lingering (a run waits for its entries)."""
        self._hurried = True
        if self._lingering is not None:
            resolve(self._lingering)

    async def _write_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                if not self._hurried and (wait := self._sent_at + self.linger - loop.time()) > 0:
                    await self._linger(loop, wait)
                self._hurried = False
                batch = self._next_batch()
                if batch:
                    self._sent_at = loop.time()
                    await self._write(batch)
        finally:
            self._task = None
            if not self._waiting:
                self.on_idle()

    async def _linger(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._lingering = lingering = loop.create_future()
        timer = loop.call_later(seconds, resolve, lingering)
        try:
            await lingering
        finally:
            timer.cancel()
            self._lingering = None

    @property
    def idle(self) -> bool:
        """Whether no write is in flight."""
        return self._task is None

    async def aclose(self) -> None:
        """Wait for the writes in flight and waiting (each fails on its own if Redis is gone)."""
        while self._task is not None:
            await asyncio.wait([self._task])

    def _next_batch(self) -> list[tuple[StreamWriter, list[PendingEntry]]]:
        batch: list[tuple[StreamWriter, list[PendingEntry]]] = []
        room = MAX_ENTRIES_PER_WRITE
        for writer in list(self._waiting):
            if room <= 0:
                break
            del self._waiting[writer]
            if writer.waiting:
                entries = writer.take(room)
                room -= len(entries)
                batch.append((writer, entries))
                if writer.waiting:
                    self._waiting[writer] = None  # the rest goes next time, after the others
        return batch

    async def _write(self, batch: list[tuple[StreamWriter, list[PendingEntry]]]) -> None:
        writes = [(writer.stream, writer.run_id, writer.last_id, entries) for writer, entries in batch]
        try:
            results = await append_many(self.redis, writes)
        except Exception as e:
            self.metrics.redis_error("write")
            for writer, _ in batch:
                writer.written(None, e)
            return
        except BaseException as e:  # cancelled (the loop is closing): fail the writers, then stop
            for writer, _ in batch:
                writer.written(None, e)
            raise
        self.metrics.written(sum(len(e) for (_, e), done in zip(batch, results, strict=True) if done is not None))
        for (writer, _), entry_id in zip(batch, results, strict=True):
            session = writer.stream.keys.session_id
            lost = LeaseLostError(f"run {writer.run_id} no longer holds session {session!r}")
            writer.written(entry_id, None if entry_id is not None else lost)
