"""Reading a session's stream: from its `begin` or resuming after an entry id, until `end`.

Listeners of a plain Redis client share the process's `StreamHub` (one blocking read for all of
them); a Redis Cluster client reads per listener, since one read cannot span slots.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from .errors import CursorExpiredError
from .hub import StreamHub, Subscription
from .keys import check_stream_id
from .store import Entry, SessionStream, stream_id_key

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

    async def next(self, timeout: float) -> list[Entry]:
        entries = await self.stream.read(self.last, block_ms=max(1, int(timeout * 1000)))
        if entries:
            self.last = entries[-1].id
        elif self.last != "0-0":  # the stream exists: a run began (or the listener resumed)
            await self.stream.reap(grace_ms=self.grace_ms)
        return entries


@contextlib.asynccontextmanager
async def _reader(stream: SessionStream, after: str, grace_ms: int) -> AsyncIterator[_DirectReader | Subscription]:
    if isinstance(stream.redis, Redis):
        async with StreamHub.of(stream.redis).subscribe(stream, after, grace_ms=grace_ms) as subscription:
            yield subscription
    else:
        yield _DirectReader(stream=stream, last=after, grace_ms=grace_ms)


async def listen(
    stream: SessionStream,
    *,
    wait: float,
    timeout: float,
    after: str | None,
    grace_ms: int,
    heartbeat: float | None = None,
) -> AsyncIterator[Entry | None]:
    """Yield entries after `after` (default: from the start) up to and including `end`.

    Stops early after `wait` seconds if nothing arrives at all, or `timeout` seconds of silence once
    something has. When a run dies without writing `end`, its listeners write `error` + `end` for it.
    With `heartbeat`, yields `None` after each `heartbeat` seconds without an entry.
    Raises `CursorExpiredError` if events after `after` were already trimmed away.
    """
    cursor = "0-0" if after is None or after == "0" else check_stream_id(after)
    oldest = await stream.oldest_id()  # also: an unreachable Redis fails here, not after `wait`
    if oldest is not None and stream_id_key(oldest) > stream_id_key(cursor) and cursor != "0-0":
        raise CursorExpiredError(cursor, oldest)
    deadline = time.monotonic() + wait
    beat = math.inf if heartbeat is None else time.monotonic() + heartbeat
    async with _reader(stream, cursor, grace_ms) as reader:
        while True:
            now = time.monotonic()
            if deadline <= now:
                return
            if heartbeat is not None and beat <= now:
                yield None
                beat = now + heartbeat
            entries = await reader.next(min(deadline, beat, now + POLL_SECONDS) - now)
            if not entries:
                continue
            if heartbeat is not None:
                beat = time.monotonic() + heartbeat
            for entry in entries:
                yield entry
                if entry.type == "end":
                    return
            deadline = time.monotonic() + timeout
