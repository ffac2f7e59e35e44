"""A listener's view of a stream the `StreamHub` follows: what the hub read for it, in order, each entry once.

The hub hands a subscription every entry it reads of the subscription's stream; the listener takes them out in
batches, or, after it fell behind by more than `MAX_BUFFERED_BYTES` (or joined), reads the gap from Redis first.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import InitVar, dataclass, field
from typing import ClassVar, Protocol

from .._core.aio import resolve
from .._core.cursor import Cursor
from .._core.entry import Entry
from .._store.stream import SessionStream

__all__ = ["FIRST_PAGE", "READ_COUNT", "Reader", "Subscription", "page_size"]


class Reader(Protocol):
    """What a subscription needs of the `StreamHub` that feeds it."""

    def raise_error(self) -> None:
        """Raise what stopped the reads (Redis unreachable), if anything did."""

    @property
    def tick(self) -> float:
        """Seconds between the hub's ticks."""

    def wake_by_tick(self, subscription: Subscription, at: float) -> float:
        """Have the hub's first tick from `at` (the loop's time) call `subscription.wake_if_due`; returns when it
        comes."""


READ_COUNT = 1000
"""Entries per stream per read."""
MAX_BUFFERED = 10_000
"""Entries a subscriber may have waiting before it drops them and re-reads from Redis instead."""
MAX_BUFFERED_BYTES = 1 << 20
"""Bytes of entries a subscriber may have waiting before it drops them and re-reads from Redis instead."""
CATCH_UP_BYTES = 1 << 20
"""Bytes one catch-up read aims at (its entry count follows the entries' size)."""
FIRST_PAGE = 16
"""Entries a listener's first read asks for, before their size is known."""
COARSE_WAIT = 2.0
"""Seconds from which a listener's wait is ended by the hub's tick (up to `CHECK_TICK` late) rather than a timer
of its own: a heartbeat's deadline on every wait of thousands of streams would keep the event loop's timer heap
large, and every timer anyone sets (each Redis read sets one) pays for its size."""


@dataclass(eq=False, kw_only=True, slots=True)
class Subscription:
    """One listener's view of a stream: entries strictly after `cursor`, in order, each once."""

    hub: Reader
    stream: SessionStream
    after: InitVar[Cursor]
    """Where the listener starts: the entries after it are its."""
    gap_until: str | None = None
    """Entries in (`cursor`, `gap_until`] are to be read from Redis (`+`: all there are), not from the hub."""
    _buffer: list[Entry] = field(default_factory=list)
    _buffered_bytes: int = 0
    _page: int = FIRST_PAGE
    """Entries the next catch-up read asks for: about `CATCH_UP_BYTES` of them."""
    _arrived: bool = False
    """Entries came (or the hub failed) since the listener last looked; an `asyncio.Event` without its deque."""
    _waiter: asyncio.Future[None] | None = None
    _wake_at: float = math.inf
    """When the hub's tick ends the current wait (`COARSE_WAIT`)."""
    _ticked_at: float = math.inf
    """When the hub's tick next looks at this subscription (the loop's time; `inf`: none will). A wait that ends
    later asks for no tick of its own: that one asks again for the wait's end. So a listener that gets an entry
    every few seconds asks once a heartbeat, not once a wait."""
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    """Kept: Python 3.11's `get_running_loop` makes a system call (`getpid`) each time, and a listener waits for
    each batch."""
    _in_order: bool = False
    """What the hub hands on comes after `cursor`; not so until a first batch proved it, nor after a catch-up."""
    _last_id: str = field(init=False)
    """The id of the last entry handed to the listener: kept as it comes, made a `Cursor` only when one is asked
    for (parsing each batch's last id cost a listener about a fifth of its CPU a delivery)."""
    _cursor: Cursor = field(init=False)
    poll: ClassVar[float] = math.inf
    """No wait of a listener needs to end early: the hub checks silent streams and wakes its subscribers."""

    def __post_init__(self, after: Cursor) -> None:
        self._cursor, self._last_id = after, after.id

    @property
    def cursor(self) -> Cursor:
        """The last entry handed to the listener."""
        if self._cursor.id != self._last_id:
            self._cursor = Cursor(self._last_id)
        return self._cursor

    def deliver(self, entries: list[Entry], size: int) -> None:
        """Called by the hub with the entries it read after its cursor (`size`: their bytes)."""
        self._buffer += entries
        self._buffered_bytes += size
        if len(self._buffer) > MAX_BUFFERED or self._buffered_bytes > MAX_BUFFERED_BYTES:
            self._buffer.clear()
            self._buffered_bytes = 0
            self.gap_until = entries[-1].id  # re-read everything up to here from Redis
        self.wake()

    def wake(self) -> None:
        self._arrived = True
        if self._waiter is not None:
            resolve(self._waiter)

    async def next(self, timeout: float) -> list[Entry]:
        """The next entries, waiting up to `timeout` seconds (`inf`: until some come); `[]` if none came."""
        if not self._buffer and self.gap_until is None and not self._arrived:
            # The wait, inline: a coroutine of its own cost each delivery its creation and a frame.
            loop = self._loop
            self._waiter = waiter = loop.create_future()
            timer = None
            if timeout < COARSE_WAIT:
                timer = loop.call_later(timeout, resolve, waiter)  # not asyncio.timeout: cheaper
            elif timeout != math.inf:
                self._wake_at = at = loop.time() + timeout
                if self._ticked_at >= at + self.hub.tick:  # else the tick asked for comes by `at`'s
                    self._ticked_at = self.hub.wake_by_tick(self, at)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._wake_at = math.inf
                self._waiter = None
        self._arrived = False
        self.hub.raise_error()
        if self.gap_until is not None:
            return await self._catch_up(self.gap_until)
        batch, self._buffer, self._buffered_bytes = self._buffer, [], 0
        if batch and not self._in_order:
            # Only after a resume ahead of the hub or a catch-up: drop what was already handed out.
            last = self.cursor.key
            if Cursor.key_of(batch[0].id) > last:
                self._in_order = True
            else:
                batch = [entry for entry in batch if Cursor.key_of(entry.id) > last]
        if batch:
            self._last_id = batch[-1].id
        return batch

    def wake_if_due(self, now: float) -> None:
        """The tick this subscription asked for (`now`: the loop's time): end the current wait if its time came,
        else ask for the tick at its end."""
        self._ticked_at = math.inf
        if self._waiter is None:
            return
        if self._wake_at <= now:
            resolve(self._waiter)
        elif self._wake_at != math.inf:
            self._ticked_at = self.hub.wake_by_tick(self, self._wake_at)

    async def _catch_up(self, until: str) -> list[Entry]:
        count = self._page
        page = await self.stream.read_range(after=self._last_id, until=until, count=count)
        self._page = page_size(page, count)
        # Closed only if no newer gap opened (an overflow) while this page was read.
        if (len(page) < count or page[-1].id == until) and self.gap_until == until:
            self.gap_until = None
        self._in_order = False  # the hub may have handed on some of what this page read
        if page:
            self._last_id = page[-1].id
        elif self.gap_until is None:
            return await self.next(0)  # nothing missed after all: take what the hub delivered
        return page


def page_size(entries: list[Entry], count: int) -> int:
    """Entries the next read of a stream should ask for to get about `CATCH_UP_BYTES`, given the last
    read (for `count` entries) brought `entries`. It at most doubles: small entries so far (a `begin`)
    say little about the size of the next ones."""
    if not entries:
        return count
    return max(1, min(READ_COUNT, 2 * count, CATCH_UP_BYTES * len(entries) // sum(entry.size for entry in entries)))
