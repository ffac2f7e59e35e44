"""The stream writer: one run's entries, written in order with at most one round trip in flight.

The first entry of a burst is sent at once; entries added while a write is in flight go together in
the next one (one script call carries them all). So a slow Redis batches more instead of stalling
the model, and a fast one sees every token immediately.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .events import Body
from .store import SessionStream

__all__ = ["StreamWriter"]

Pending = tuple[str, str, Body | None]


@dataclass(eq=False, kw_only=True)
class StreamWriter:
    """Appends a run's entries to its stream under its lease; errors surface at the next call."""

    stream: SessionStream
    run_id: str
    max_pending: int = 1000
    """Entries that may wait for the write in flight before `add` waits too (backpressure)."""

    _pending: list[Pending] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None
    _error: BaseException | None = None

    async def add(self, type_: str, origin: str, body: Body | None) -> None:
        """Queue an entry; it is written with the next round trip, in order."""
        self._raise_error()
        self._pending.append((type_, origin, body))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._write_pending())
        elif len(self._pending) >= self.max_pending:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every queued entry is written; raises the write's error if one failed."""
        if self._drain is not None:
            # Shielded: a cancelled caller must not cancel the write other entries are waiting on.
            await asyncio.shield(self._drain)
        self._raise_error()

    async def _write_pending(self) -> None:
        while self._pending and self._error is None:
            batch, self._pending = self._pending, []
            try:
                await self.stream.append(self.run_id, batch)
            except Exception as e:
                self._error = e

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
