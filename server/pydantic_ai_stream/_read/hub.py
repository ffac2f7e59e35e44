"""One reader per process that serves every listener, instead of a connection per listener.

A `StreamHub` (one per `Runtime`, the owner of its tasks) reads each new entry of the streams someone in this
process listens to once, decodes it once and hands it to all of that stream's subscribers. Redis tells it which
streams were written (`WriteNotices`: every script that adds to a session's stream publishes on the stream's
channel), and a round of reads names only those, at each stream's cursor: a read costs the same however many
streams the hub follows, and reads that come while one is in flight join the next round. The notice of an append
(a run's tokens) carries the entries, and names the id they follow on from: when that is at or before the
stream's cursor, the hub hands them out with no read at all (a read in flight then skips what a notice brought).
Once `FULL_READ_EVERY` the hub reads every stream it follows, for a writer that does not publish (an older
release, a script of one's own). A listener that joins a stream the hub already follows reads the part it missed
with `XRANGE`. Entries are handed only to the followers the read was sent for, so a listener that joins while a
read with an older follower's cursor is in flight never gets that read's entries. A subscriber that falls behind
by more than `MAX_BUFFERED_BYTES` drops its buffer and re-reads from Redis, which holds the stream anyway: a slow
client costs no memory here. A dropped connection is re-opened (and everything read again from each stream's
cursor), so a Redis restart loses nothing; only an outage longer than `RECONNECT_WINDOW` reaches the listeners.

Redis Cluster cannot read streams of different slots in one command, so cluster clients keep one
blocking read per listener (see `listen.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._core.cursor import Cursor
from .._core.entry import Entry, decode
from .._core.errors import PydanticAIStreamError
from .._core.names import END
from .._core.settings import Settings
from .._store.cluster import reap_many
from .._store.redis import own_pool, xread_entries_by_key
from .._store.stream import SessionStream
from .notices import WriteNotices, carried_entries
from .subscription import READ_COUNT, Subscription

__all__ = ["StreamHub"]

logger = logging.getLogger(__name__)

FULL_READ_EVERY = 1.0
"""Seconds between reads of every followed stream, written or not (a writer that does not publish)."""
READ_TIMEOUT = 10.0
"""Seconds a read may take before its connection is taken for dead."""
RECONNECT_WINDOW = 10.0
"""Seconds the hub keeps re-opening a dropped connection before its listeners see the failure."""
CHECK_AFTER = 1.0
"""Seconds of silence after which a followed stream is checked for a dead run (and then as often, unless its run
is known to live on longer: its lease's time to live, up to `CHECK_AT_MOST_EVERY`)."""
CHECK_AT_MOST_EVERY = 5.0
"""Longest gap between the checks of a silent stream: a run's flags deleted before their time are found by then."""
CHECK_TICK = 0.25
CHECK_BATCH = 500
"""Streams one dead-run check covers at most."""


class _HearingStopped(Exception):
    """The notices failed for good (`_read_loop` reports their error)."""


@dataclass(eq=False, kw_only=True)
class _Followed:
    stream: SessionStream
    grace_ms: int
    """How long a stream the hub ends for a dead run is kept."""
    cursor: Cursor
    """The last entry the hub read from this stream."""
    subscribers: set[Subscription] = field(default_factory=set)
    active_at: float = field(default_factory=time.monotonic)
    """When the hub last read an entry of this stream (or started to follow it)."""
    check_at: float = 0.0
    """When the stream is next checked, if still silent (`time.monotonic`)."""
    ended: bool = False
    """The last entry read was `end`: no run to check on."""


@dataclass(eq=False, kw_only=True)
class StreamHub:
    """The process's reader of session streams for one Redis client (see the module docstring)."""

    redis: Redis
    settings: Settings
    on_idle: Callable[[], None] = lambda: None
    """Called when the hub's tasks have ended (nobody listens)."""
    _streams: dict[str, _Followed] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    """The read loop, until it winds down (then a listener who comes starts the next one)."""
    _loops: set[asyncio.Task[None]] = field(default_factory=set)
    """Every read loop not yet ended, also one winding down."""
    _checker: asyncio.Task[None] | None = None
    _notices: WriteNotices = field(init=False)
    _written: dict[str, None] = field(default_factory=dict)
    """The streams to read in the next round (written, or newly heard about), in the order they were named."""
    _read_all_at: float = 0.0
    """When every followed stream is next read (`time.monotonic`); 0: at the next round."""
    _kicked: asyncio.Future[None] | None = None
    """What the read loop waits on between rounds."""
    _in_read: dict[str, _Followed] = field(default_factory=dict)
    """The followers the read in flight was sent for, by key: only they get its entries."""
    _reading: tuple[AbstractConnection, float] | None = None
    """The read in flight: its connection, and when it was sent (the loop's time); the tick drops a connection
    whose read outlasts `READ_TIMEOUT` (a timer on every read would cost each entry's round more)."""
    _due: dict[int, list[Subscription]] = field(default_factory=dict)
    """Subscriptions whose wait a tick ends (`COARSE_WAIT`), by the tick's number (`CHECK_TICK`s since the loop's
    time 0): a timing wheel, so a wait costs an append, and a tick looks only at the waits due."""
    _error: BaseException | None = None
    _closed: bool = False

    def __post_init__(self) -> None:
        self._notices = self._new_notices()

    def _new_notices(self) -> WriteNotices:
        return WriteNotices(redis=self.redis, streams=self._streams.keys, on_written=self._on_written)

    @contextlib.asynccontextmanager
    async def subscribe(self, stream: SessionStream, cursor: Cursor, *, grace_ms: int) -> AsyncIterator[Subscription]:
        """Follow `stream` strictly after `cursor` while the context is open.

        While it is silent and its run may have died, the hub checks on it (and ends it for the dead
        run, keeping it `grace_ms`).
        """
        if self._closed:
            raise PydanticAIStreamError("the runtime reading this stream was closed")
        key = stream.keys.stream
        followed = self._streams.get(key)
        # The first entries come from Redis, read after `cursor` then checked against trimming (which
        # `XREAD` would skip silently); from then on the hub's reads, minus what that read had.
        subscription = Subscription(hub=self, stream=stream, after=cursor, gap_until="+")
        if followed is None:
            followed = self._streams[key] = _Followed(stream=stream, grace_ms=grace_ms, cursor=cursor)
            self._notices.sync()  # its subscription's confirmation has it read
        followed.subscribers.add(subscription)
        if self._task is None:
            self._error = None
            self._start()
        if self._checker is None or self._checker.done():
            # Also beside a running read loop: the check stops a tick after the last listener left,
            # while the loop's last round may still be in flight, which a new listener then keeps going.
            self._checker = asyncio.create_task(self._check_silent_streams())
        try:
            yield subscription
        finally:
            followed.subscribers.discard(subscription)
            if not followed.subscribers and self._streams.get(key) is followed:
                del self._streams[key]  # the read in flight may still return it: then it is ignored
                self._notices.sync()
                if not self._streams:
                    self._kick()  # the read loop ends

    def _start(self) -> None:
        self._read_all_at = 0.0
        self._task = asyncio.create_task(self._read_loop())
        self._loops.add(self._task)

    def _on_written(self, key: str, carried: str) -> None:
        followed = self._streams.get(key)
        if followed is None:
            return
        if carried:
            entries = carried_entries(carried, followed.cursor.key)
            if entries is not None:  # they follow on from the cursor: no read
                if entries:
                    self._hand_out(followed, entries)
                return
        self._written[key] = None
        self._kick()

    def _kick(self) -> None:
        if self._kicked is not None and not self._kicked.done():
            self._kicked.set_result(None)

    async def _check_silent_streams(self) -> None:
        """End the streams of runs that died without `end`, for every follower at once.

        A stream is checked once it has been silent for `CHECK_AFTER` seconds, then at most that
        often: one script call covers every such stream the hub follows.
        """
        try:
            while self._streams and not self._closed:
                await self._check_due_streams()
        finally:
            self._checker = None
            if self.idle:
                self.on_idle()

    @property
    def tick(self) -> float:
        """Seconds between the hub's ticks (`CHECK_TICK`)."""
        return CHECK_TICK

    def wake_by_tick(self, subscription: Subscription, at: float) -> float:
        """Have the first tick from `at` (the loop's time) call `subscription.wake_if_due`; returns when it comes."""
        tick = math.ceil(at / CHECK_TICK)
        self._due.setdefault(tick, []).append(subscription)
        return tick * CHECK_TICK

    def _wake_due(self, now: float) -> None:
        """End the waits due by `now` (the loop's time); a wait that ended since is left alone."""
        for tick in [tick for tick in self._due if tick * CHECK_TICK <= now]:
            for subscription in self._due.pop(tick):
                subscription.wake_if_due(now)

    async def _check_due_streams(self) -> None:
        """One tick of `_check_silent_streams`; also ends the waits that are due, keeps the notices' connection
        proven alive and has every stream read once `FULL_READ_EVERY`."""
        await asyncio.sleep(CHECK_TICK)  # a periodic timer, not synchronisation
        loop_now = asyncio.get_running_loop().time()
        self._wake_due(loop_now)
        self._notices.check(loop_now)
        await self._drop_stalled_read(loop_now)
        now = time.monotonic()
        if now >= self._read_all_at:
            self._kick()
        due = [  # the cheapest test first: every tick looks at every stream
            followed
            for followed in self._streams.values()
            if now >= followed.check_at
            and now >= followed.active_at + CHECK_AFTER
            and not followed.ended
            and not followed.cursor.is_begin  # the stream exists: a run began (or a listener resumed)
        ]
        for followed in due:
            followed.check_at = now + CHECK_AFTER
        for chunk in range(0, len(due), CHECK_BATCH):
            batch = due[chunk : chunk + CHECK_BATCH]
            try:
                lives = await reap_many(self.redis, [f.stream for f in batch], grace_ms=batch[0].grace_ms)
            except Exception as e:  # the read loop meets Redis failures too, and reports them
                logger.debug("could not check %d silent streams: %s", len(batch), e)
                continue
            for followed, lives_ms in zip(batch, lives, strict=True):
                if lives_ms:  # not dead before its flags lapse: no need to look sooner
                    followed.check_at = now + min(max(lives_ms / 1000, CHECK_AFTER), CHECK_AT_MOST_EVERY)

    async def _drop_stalled_read(self, now: float) -> None:
        """Drop the reads' connection if its read in flight has waited over `READ_TIMEOUT` (`now`: the loop's time):
        its `_read_rounds` raises, and `_reopening` reads everything again on a new one."""
        if self._reading is None or now - self._reading[1] <= READ_TIMEOUT:
            return
        connection, self._reading = self._reading[0], None
        logger.warning("a stream read got no answer in %.0f s; dropping its Redis connection", READ_TIMEOUT)
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)  # ends the read at once

    def raise_error(self) -> None:
        """Raise what stopped the hub's reads (Redis unreachable), if anything did."""
        if self._error is not None:
            raise self._error

    async def _read_loop(self) -> None:
        """Hear which streams are written and read them while anyone listens; a connection that drops is
        re-opened (`_reopening`)."""
        notices = self._notices = self._new_notices()  # a loop's own: one winding down leaves the next one's alone
        hearing = asyncio.create_task(self._reopening(notices.hear, "notices"))
        hearing.add_done_callback(lambda _: self._kick())  # it failed for good: the reads stop with it
        try:
            await self._reopening(lambda: self._read_rounds(hearing), "reads")
        except _HearingStopped:
            self._error = hearing.exception()
        except Exception as e:
            self._error = e
        finally:
            this = asyncio.current_task()
            if self._task is this:  # before any wait: a listener who comes now starts the next loop
                self._task, self._in_read = None, {}
            for followed in self._streams.values():
                for subscription in followed.subscribers:
                    subscription.wake()
            hearing.cancel()
            await asyncio.gather(hearing, return_exceptions=True)
            await notices.aclose()
            self._loops.discard(this)
            if self._streams and self._task is None and self._error is None and not self._closed:
                self._start()  # listeners came as it ended for want of them (or of its notices' connection)
            if self.idle:
                self.on_idle()

    async def _reopening(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        """`work()` while anyone listens, re-run when its connection drops, for up to `RECONNECT_WINDOW` of failures
        in a row; a re-opened connection reads every stream again from its cursor."""
        failing_since: float | None = None
        while self._streams and not self._closed:
            try:
                await work()
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                # A restart, an idle timeout or a killed connection: read everything again.
                self._in_read, self._read_all_at = {}, 0.0
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > RECONNECT_WINDOW:
                    raise
                logger.warning("stream reader lost its Redis connection for %s (%s); reconnecting", what, e)
                await asyncio.sleep(min(1.0, 0.05 * 2 ** min(5, int(now - failing_since))))  # back-off
            else:
                failing_since = None

    @property
    def idle(self) -> bool:
        """Whether the hub has no task running."""
        return not self._loops and self._checker is None

    async def aclose(self) -> None:
        """Stop reading (listeners still following get an error) and close the reader's connections."""
        self._closed = True
        self._error = PydanticAIStreamError("the runtime reading this stream was closed")
        tasks = [t for t in (*self._loops, self._checker) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._notices.aclose()
        for followed in self._streams.values():
            for subscription in followed.subscribers:
                subscription.wake()

    async def _read_rounds(self, hearing: asyncio.Task[None]) -> None:
        """Read the streams written (all of them once `FULL_READ_EVERY`) while anyone listens, a round at a time;
        raises when the connection fails, or what stopped `hearing`."""
        pool = own_pool(self.redis, socket_timeout=None)  # `READ_TIMEOUT` bounds each read instead (the tick)
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        try:
            # Also checked here: redis-py can swallow a cancel that lands mid-read.
            while self._streams and not self._closed:
                if hearing.done():
                    raise _HearingStopped
                command = self._read_command(connection)
                if command is None:
                    self._kicked = kicked = loop.create_future()
                    await kicked
                    continue
                self._reading = (connection, loop.time())
                await connection.send_packed_command(command, check_health=False)
                reply = await connection.read_response()
                self._reading = None
                self._dispatch(reply)
        finally:
            if self._reading is not None and self._reading[0] is connection:
                self._reading = None
            with contextlib.suppress(Exception):
                await asyncio.shield(pool.disconnect())

    def _read_command(self, connection: AbstractConnection) -> list[bytes] | None:
        """`XREAD COUNT .. STREAMS <keys> <cursors>` for the streams written (or all, when due), packed for the
        wire; `None` if there is nothing to read."""
        now = time.monotonic()
        if now >= self._read_all_at:
            self._read_all_at = now + FULL_READ_EVERY
            self._in_read = dict(self._streams)
        else:
            self._in_read = {key: self._streams[key] for key in self._written if key in self._streams}
        self._written = {}
        if not self._in_read:
            return None
        cursors = [followed.cursor.id for followed in self._in_read.values()]
        return connection.pack_command("XREAD", "COUNT", READ_COUNT, "STREAMS", *self._in_read, *cursors)

    def _dispatch(self, reply: Any) -> None:
        """Hand out an `XREAD` reply read off the wire (parsed as redis-py parses its own)."""
        for raw_key, raw_entries in xread_entries_by_key(self.redis.response_callbacks["XREAD"](reply)):
            key = decode(raw_key)
            followed = self._in_read.get(key)
            if followed is None or self._streams.get(key) is not followed or not raw_entries:
                continue  # its followers left while the read was in flight (others may have come)
            if len(raw_entries) >= READ_COUNT:
                self._written[key] = None  # more to read: in the next round
            entries = [Entry.from_redis(entry_id, fields) for entry_id, fields in raw_entries]
            if Cursor.key_of(entries[0].id) <= followed.cursor.key:
                # Notices carried some of them while the read was in flight.
                last = followed.cursor.key
                entries = [entry for entry in entries if Cursor.key_of(entry.id) > last]
            if entries:
                self._hand_out(followed, entries)

    @staticmethod
    def _hand_out(followed: _Followed, entries: list[Entry]) -> None:
        """Give `followed`'s subscribers `entries`, the next after its cursor (read, or carried by a notice)."""
        followed.cursor = Cursor(entries[-1].id)
        followed.active_at, followed.ended = time.monotonic(), entries[-1].type == END
        size = sum(entry.size for entry in entries)
        for subscription in followed.subscribers:
            subscription.deliver(entries, size)
