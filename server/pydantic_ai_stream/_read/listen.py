"""Reading a session's stream: from its `begin` or resuming after an entry id, until `end`.

Listeners of a plain Redis client share their runtime's `StreamHub` (one blocking read for all of
them); on a Redis Cluster each listener reads on its own, since one read cannot span slots.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .._core.entry import Entry, stream_id_key, trimmed_past
from .._core.errors import CursorAheadError, CursorExpiredError, ListenTimeoutError, StreamNotFoundError
from .._core.keys import check_stream_id
from .._core.names import END
from .._store.stream import SessionStream
from .hub import FIRST_PAGE, StreamHub, Subscription, page_size

__all__ = ["listen"]

POLL_SECONDS = 1.0
"""Longest single wait for entries; between waits a silent stream is checked for a dead run."""


@dataclass(kw_only=True)
class _DirectReader:
    """Blocking reads of one stream on the client's own connections (for Redis Cluster).

    When a read finds the stream silent, it checks whether the stream's run died (the hub does this
    for its followers itself, for all of them at once).
    """

    stream: SessionStream
    last: str
    grace_ms: int
    checked: bool = False
    """The first read is a checked range read: `XREAD` would skip entries trimmed meanwhile."""
    count: int = FIRST_PAGE
    """Entries the next read asks for: about `CATCH_UP_BYTES` of them."""

    async def next(self, timeout: float) -> list[Entry]:
        count = self.count
        if not self.checked:
            entries = await self.stream.read_range(after=self.last, count=count)
            self.checked = len(entries) < count
        else:
            entries = await self.stream.read(self.last, block_ms=max(1, int(timeout * 1000)), count=count)
        self.count = page_size(entries, count)
        if entries:
            self.last = entries[-1].id
        elif self.last != "0-0":  # the stream exists: a run began (or the listener resumed)
            await self.stream.reap(grace_ms=self.grace_ms)
        return entries


@contextlib.asynccontextmanager
async def _reader(
    stream: SessionStream, hub: StreamHub | None, after: str, grace_ms: int
) -> AsyncIterator[_DirectReader | Subscription]:
    if hub is not None:
        async with hub.subscribe(stream, after, grace_ms=grace_ms) as subscription:
            yield subscription
    else:
        yield _DirectReader(stream=stream, last=after, grace_ms=grace_ms)


async def listen(
    stream: SessionStream,
    *,
    hub: StreamHub | None,
    wait: float,
    timeout: float | None,
    after: str | None,
    grace_ms: int,
    heartbeat: float | None = None,
) -> AsyncIterator[Entry | None]:
    """Yield entries after `after` (default: from the start) up to and including `end`, read through
    `hub` (or, without one, on the stream's own client).

    Resuming after the id of `end` yields nothing. With `heartbeat`, yields `None` after each
    `heartbeat` seconds without an entry. When a run dies without writing `end`, its listeners write
    `error` + `end` for it. Raises, instead of ending as if the run were over:
    `StreamNotFoundError` when no stream appears within `wait` seconds; `ListenTimeoutError` after
    `timeout` seconds without an entry (`None`: no limit); `CursorExpiredError` if events after
    `after` were trimmed away (or expired); `CursorAheadError` if `after` is past the stream's end.
    """
    cursor = "0-0" if after is None or after == "0" else check_stream_id(after)
    bounds = await stream.bounds()  # also: an unreachable Redis fails here, not after `wait`
    if bounds is None:
        if cursor != "0-0":
            raise CursorExpiredError(cursor, "none: the stream expired")
    else:
        if stream_id_key(cursor) > stream_id_key(bounds.newest):
            raise CursorAheadError(cursor, bounds.newest)
        if trimmed_past(cursor, oldest=bounds.oldest, oldest_type=bounds.oldest_type):
            raise CursorExpiredError(cursor, bounds.oldest)
        if cursor == bounds.newest and bounds.newest_type == END:
            return
    now = time.monotonic()
    # `wait` bounds the wait for the stream to appear; `timeout` the silence once it exists.
    appear_by = now + wait if bounds is None else math.inf
    silent_by = math.inf if timeout is None or bounds is None else now + timeout
    beat = math.inf if heartbeat is None else now + heartbeat
    last = cursor
    async with _reader(stream, hub, cursor, grace_ms) as reader:
        while True:
            now = time.monotonic()
            if appear_by <= now:
                session = stream.keys.session_id
                raise StreamNotFoundError(f"session {session!r} has no events (it never ran, or they expired)")
            if silent_by <= now:
                raise ListenTimeoutError(timeout or 0.0, last)
            if beat <= now:
                yield None
                beat = now + (heartbeat or math.inf)
            entries = await reader.next(min(appear_by, silent_by, beat, now + POLL_SECONDS) - now)
            if not entries:
                continue
            now = time.monotonic()
            appear_by = math.inf
            silent_by = math.inf if timeout is None else now + timeout
            beat = math.inf if heartbeat is None else now + heartbeat
            for entry in entries:
                yield entry
                if entry.type == END:
                    return
            last = entries[-1].id
