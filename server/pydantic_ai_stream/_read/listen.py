"""Reading a session's stream: from its `begin` or resuming after an entry id, until `end`.

Listeners of a plain Redis client share their runtime's `StreamHub` (one blocking read for all of
them); on a Redis Cluster each listener reads on its own, since one read cannot span slots.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from .._core.cursor import Cursor
from .._core.entry import Entry
from .._core.errors import ListenTimeoutError, StreamNotFoundError
from .._core.names import END, ERROR, RUN_LOST
from .._store.stream import SessionStream
from .hub import StreamHub
from .subscription import FIRST_PAGE, Subscription, page_size

__all__ = ["listen_batches"]

POLL_SECONDS = 1.0
"""Longest single wait of a listener reading on its own; between waits it checks a silent stream for a dead
run. The hub's subscribers wait without it: the hub checks their streams and wakes them on a failure."""


@dataclass(kw_only=True)
class _DirectReader:
    """Blocking reads of one stream on the client's own connections (for Redis Cluster).

    When a read finds the stream silent, it checks whether the stream's run died (the hub does this
    for its followers itself, for all of them at once).
    """

    stream: SessionStream
    cursor: Cursor
    grace_ms: int
    checked: bool = False
    """The first read is a checked range read: `XREAD` would skip entries trimmed meanwhile."""
    count: int = FIRST_PAGE
    """Entries the next read asks for: about `CATCH_UP_BYTES` of them."""
    poll: float = POLL_SECONDS

    async def next(self, timeout: float) -> list[Entry]:
        count = self.count
        if not self.checked:
            entries = await self.stream.read_range(after=self.cursor.id, count=count)
            self.checked = len(entries) < count
        else:
            entries = await self.stream.read(self.cursor.id, block_ms=max(1, int(timeout * 1000)), count=count)
        self.count = page_size(entries, count)
        if entries:
            self.cursor = Cursor(entries[-1].id)
        elif not self.cursor.is_begin:  # the stream exists: a run began (or the listener resumed)
            await self.stream.reap(grace_ms=self.grace_ms)
        return entries


@contextlib.asynccontextmanager
async def _reader(
    stream: SessionStream, hub: StreamHub | None, cursor: Cursor, grace_ms: int
) -> AsyncIterator[_DirectReader | Subscription]:
    if hub is not None:
        async with hub.subscribe(stream, cursor, grace_ms=grace_ms) as subscription:
            yield subscription
    else:
        yield _DirectReader(stream=stream, cursor=cursor, grace_ms=grace_ms)


async def listen_batches(
    stream: SessionStream,
    *,
    hub: StreamHub | None,
    wait: float,
    timeout: float | None,
    after: str | None,
    grace_ms: int,
    heartbeat: float | None = None,
    on_lost: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[list[Entry] | None]:
    """Yield entries after `after` (default: from the start) up to and including `end`, read through
    `hub` (or, without one, on the stream's own client), in the batches they arrived in: one read's
    worth at a time, never empty (shared with other listeners: do not change them).

    Resuming after the id of `end` yields nothing. With `heartbeat`, yields `None` after each
    `heartbeat` seconds without an entry. When a run dies without writing `end`, its listeners write
    `error` + `end` for it; a listener that reads that `end` awaits `on_lost()` before yielding it.
    Raises, instead of ending as if the run were over: `StreamNotFoundError` when no stream appears
    within `wait` seconds; `ListenTimeoutError` after `timeout` seconds without an entry (`None`: no
    limit); `CursorExpiredError` if events after `after` were trimmed away (or expired);
    `CursorAheadError` if `after` is past the stream's end.
    """
    cursor = Cursor.parse(after)
    bounds = await stream.bounds()  # also: an unreachable Redis fails here, not after `wait`
    if cursor.check(bounds):
        return
    now = time.monotonic()
    # `wait` bounds the wait for the stream to appear; `timeout` the silence once it exists.
    appear_by = now + wait if bounds is None else math.inf
    silent_by = math.inf if timeout is None or bounds is None else now + timeout
    beat = math.inf if heartbeat is None else now + heartbeat
    lost = False  # the last entry read is the `error` of a run that died (`run lost`): its `end` calls `on_lost`
    async with _reader(stream, hub, cursor, grace_ms) as reader:
        while True:
            now = time.monotonic()
            entries = await reader.next(max(0.0, min(appear_by, silent_by, beat, now + reader.poll) - now))
            if not entries:
                # Only a read that found nothing ends a wait: a listener slower than `timeout` (or the heartbeat)
                # over a batch finds the entries that came meanwhile, not an error.
                now = time.monotonic()
                if appear_by <= now:
                    session = stream.keys.session_id
                    raise StreamNotFoundError(f"session {session!r} has no events (it never ran, or they expired)")
                if silent_by <= now:
                    raise ListenTimeoutError(timeout or 0.0, reader.cursor.id)
                if beat <= now:
                    yield None
                    beat = now + (heartbeat or math.inf)
                continue
            if timeout is not None or heartbeat is not None:
                now = time.monotonic()
                silent_by = math.inf if timeout is None else now + timeout
                beat = math.inf if heartbeat is None else now + heartbeat
            appear_by = math.inf
            for n, entry in enumerate(entries):
                if entry.type == END:
                    if lost and on_lost is not None:
                        await on_lost()
                    yield entries[: n + 1]
                    return
                lost = entry.type == ERROR and entry.body.get("msg") == RUN_LOST
            yield entries
