"""Reading a session's stream: from its `begin` or resuming after an entry id, until `end`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from .errors import CursorExpiredError
from .keys import check_stream_id
from .store import Entry, SessionStream

__all__ = ["listen", "stream_id_key"]

POLL_SECONDS = 1.0
"""Longest single blocking read; between reads a silent stream is checked for a dead run."""


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id (`<ms>-<seq>`)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def listen(
    stream: SessionStream, *, wait: float, timeout: float, after: str | None, grace_ms: int
) -> AsyncIterator[Entry]:
    """Yield entries after `after` (default: from the start) up to and including `end`.

    Stops early after `wait` seconds if nothing arrives at all, or `timeout` seconds of silence once
    something has. When a run dies without writing `end`, its listeners write `error` + `end` for it.
    Raises `CursorExpiredError` if events after `after` were already trimmed away.
    """
    cursor = "0"
    if after is not None and after != "0":
        cursor = check_stream_id(after)
        oldest = await stream.oldest_id()
        if oldest is not None and stream_id_key(oldest) > stream_id_key(cursor):
            raise CursorExpiredError(cursor, oldest)
    deadline = time.monotonic() + wait
    seen = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        entries = await stream.read(cursor, block_ms=max(1, int(min(remaining, POLL_SECONDS) * 1000)))
        if not entries:
            if seen or after is not None:
                await stream.reap(grace_ms=grace_ms)
            continue
        for entry in entries:
            yield entry
            if entry.type == "end":
                return
        cursor = entries[-1].id
        seen = True
        deadline = time.monotonic() + timeout
