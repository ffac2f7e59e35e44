"""One blocking reader per process that serves every listener, instead of a connection per listener.

A `StreamHub` (one per `Runtime`, the owner of its tasks) keeps a single `XREAD BLOCK` in flight over
every stream someone in this process listens to, decodes each entry once and hands it to all of
that stream's subscribers. A listener that joins a stream the hub already follows reads the part
it missed with `XRANGE`; a new stream wakes the blocked read through a wake-up stream of the hub's
own, so it joins the next read at once. Entries are handed only to the followers the read was sent
for, so a listener that joins while a read with an older follower's cursor is in flight never gets
that read's entries. A subscriber that falls behind by more than `MAX_BUFFERED_BYTES` drops its
buffer and re-reads from Redis, which holds the stream anyway: a slow client costs no memory here.
A dropped connection is re-opened and the read re-sent from each stream's cursor, so a Redis restart
loses nothing; only an outage longer than `RECONNECT_WINDOW` reaches the listeners.

Redis Cluster cannot read streams of different slots in one command, so cluster clients keep one
blocking read per listener (see `listen.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._core.cursor import Cursor
from .._core.entry import Entry, decode
from .._core.errors import PydanticAIStreamError
from .._core.keys import wake_key
from .._core.names import END
from .._core.settings import Settings
from .._store.cluster import reap_many
from .._store.redis import own_pool, xread_entries_by_key
from .._store.stream import SessionStream
from .subscription import READ_COUNT, Subscription

__all__ = ["StreamHub"]

logger = logging.getLogger(__name__)

BLOCK_MS = 1000
"""Longest single blocking read; an idle hub reads once a second and stops when nobody listens."""
RECONNECT_WINDOW = 10.0
"""Seconds the hub keeps re-opening a dropped connection before its listeners see the failure."""
WAKE_TTL_MS = 60_000
CHECK_AFTER = 1.0
"""Seconds of silence after which a followed stream is checked for a dead run (and then as often)."""
CHECK_TICK = 0.25
CHECK_BATCH = 500
"""Streams one dead-run check covers at most."""


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
    checked_at: float = 0.0
    ended: bool = False
    """The last entry read was `end`: no run to check on."""
    packed_cursor: bytes = b""
    """`cursor` as a RESP bulk string, as the read command carries it."""
    slot: tuple[list[bytes], int] | None = None
    """Where the read command's cursors hold `packed_cursor` (the list, its index), kept in step with it."""

    def __post_init__(self) -> None:
        self.advance(self.cursor)

    def advance(self, cursor: Cursor) -> None:
        self.cursor, self.packed_cursor = cursor, _bulk(cursor.id)
        if self.slot is not None:
            cursors, index = self.slot
            cursors[index] = self.packed_cursor


def _bulk(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


@dataclass(eq=False, kw_only=True)
class StreamHub:
    """The process's reader of session streams for one Redis client (see the module docstring)."""

    redis: Redis
    settings: Settings
    on_idle: Callable[[], None] = lambda: None
    """Called when the hub's tasks have ended (nobody listens)."""
    _streams: dict[str, _Followed] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _checker: asyncio.Task[None] | None = None
    _in_read: dict[str, _Followed] = field(default_factory=dict)
    """The followers the read in flight was sent for, by key: only they get its entries, and any other
    follower needs a wake-up to join the next read."""
    _packed_keys: tuple[dict[str, _Followed], bytes, list[bytes]] | None = None
    """The followed streams, in the read command's order, their keys packed and their cursors (each kept up to
    date by its stream): rebuilt only when streams come or go, so a read costs little however many streams
    the hub follows."""
    _wake_key: str = ""
    _wake_cursor: str = "0-0"
    _wake_sent: bool = False
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _due: dict[int, list[Subscription]] = field(default_factory=dict)
    """Subscriptions whose wait a tick ends (`COARSE_WAIT`), by the tick's number (`CHECK_TICK`s since the loop's
    time 0): a timing wheel, so a wait costs an append, and a tick looks only at the waits due."""
    _error: BaseException | None = None
    _closed: bool = False

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
        subscription = Subscription(hub=self, stream=stream, cursor=cursor, gap_until="+")
        if followed is None:
            followed = self._streams[key] = _Followed(stream=stream, grace_ms=grace_ms, cursor=cursor)
            self._packed_keys = None
        followed.subscribers.add(subscription)
        if self._task is None:
            self._error = None
            self._wake_key = wake_key(self.settings.redis_prefix, uuid.uuid4().hex)
            self._task = asyncio.create_task(self._read_loop())
        elif self._in_read.get(key) is not followed:
            self._wake()
        if self._checker is None or self._checker.done():
            # Also beside a running read loop: the check stops a tick after the last listener left,
            # while the loop's last read may still be in flight, which a new listener then keeps going.
            self._checker = asyncio.create_task(self._check_silent_streams())
        try:
            yield subscription
        finally:
            followed.subscribers.discard(subscription)
            if not followed.subscribers and self._streams.get(key) is followed:
                del self._streams[key]  # the read in flight may still return it: then it is ignored
                self._packed_keys = None

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

    def wake_by_tick(self, subscription: Subscription, at: float) -> None:
        """End `subscription`'s wait at the first tick from `at` (the loop's time)."""
        self._due.setdefault(math.ceil(at / CHECK_TICK), []).append(subscription)

    def _wake_due(self, now: float) -> None:
        """End the waits due by `now` (the loop's time); a wait that ended since is left alone."""
        for tick in [tick for tick in self._due if tick * CHECK_TICK <= now]:
            for subscription in self._due.pop(tick):
                subscription.wake_if_due(now)

    async def _check_due_streams(self) -> None:
        """One tick of `_check_silent_streams`; also ends the waits that are due."""
        await asyncio.sleep(CHECK_TICK)  # a periodic timer, not synchronisation
        self._wake_due(asyncio.get_running_loop().time())
        now = time.monotonic()
        due = [
            followed
            for followed in self._streams.values()
            if not followed.ended
            and not followed.cursor.is_begin  # the stream exists: a run began (or a listener resumed)
            and now - max(followed.active_at, followed.checked_at) >= CHECK_AFTER
        ]
        for followed in due:
            followed.checked_at = now
        for chunk in range(0, len(due), CHECK_BATCH):
            batch = due[chunk : chunk + CHECK_BATCH]
            try:
                await reap_many(self.redis, [f.stream for f in batch], grace_ms=batch[0].grace_ms)
            except Exception as e:  # the read loop meets Redis failures too, and reports them
                logger.debug("could not check %d silent streams: %s", len(batch), e)

    def raise_error(self) -> None:
        """Raise what stopped the hub's reads (Redis unreachable), if anything did."""
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        if self._wake_sent:
            return
        self._wake_sent = True
        task = asyncio.create_task(self._send_wake())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_wake(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
                pipe.pexpire(self._wake_key, WAKE_TTL_MS)
                await pipe.execute()
        except Exception as e:  # the read loop meets the same failure and reports it
            logger.debug("could not wake the stream hub: %s", e)

    async def _read_loop(self) -> None:
        pool = own_pool(self.redis)
        failing_since: float | None = None
        try:
            while self._streams and not self._closed:
                try:
                    await self._read_until_dropped(pool)
                except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                    # A restart, an idle timeout or a killed connection: re-read from every cursor.
                    self._in_read = {}
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > RECONNECT_WINDOW:
                        raise
                    logger.warning("stream reader lost its Redis connection (%s); reconnecting", e)
                    with contextlib.suppress(Exception):
                        await pool.disconnect()
                    await asyncio.sleep(min(1.0, 0.05 * 2 ** min(5, int(now - failing_since))))  # back-off
                else:
                    failing_since = None
        except Exception as e:
            self._error = e
        finally:
            self._in_read = {}
            self._task = None
            for followed in self._streams.values():
                for subscription in followed.subscribers:
                    subscription.wake()
            with contextlib.suppress(Exception):
                await asyncio.shield(pool.disconnect())
            if self.idle:
                self.on_idle()

    @property
    def idle(self) -> bool:
        """Whether the hub has no task running."""
        return self._task is None and self._checker is None

    async def aclose(self) -> None:
        """Stop reading (listeners still following get an error) and close the reader's connection."""
        self._closed = True
        self._error = PydanticAIStreamError("the runtime reading this stream was closed")
        tasks = [t for t in (self._task, self._checker, *self._background) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for followed in self._streams.values():
            for subscription in followed.subscribers:
                subscription.wake()

    async def _read_until_dropped(self, pool: ConnectionPool) -> None:
        """Keep one blocking read in flight while anyone listens; raises when the connection fails."""
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            # Also checked here: redis-py can swallow a cancel that lands mid-read.
            while self._streams and not self._closed:
                command = self._read_command()
                self._wake_sent = False
                await connection.send_packed_command(command)
                self._dispatch(await connection.read_response())
        finally:
            await pool.release(connection)

    def _read_command(self) -> bytes:
        """`XREAD BLOCK .. COUNT .. STREAMS <followed keys> <wake key> <cursors>`, packed for the wire.

        Packed here rather than by redis-py: with thousands of streams followed, packing every key and
        cursor for every read would cost more than everything else the hub does.
        """
        if self._packed_keys is None:
            packed = b"".join(_bulk(key) for key in self._streams) + _bulk(self._wake_key)
            cursors = [followed.packed_cursor for followed in self._streams.values()]
            for index, followed in enumerate(self._streams.values()):
                followed.slot = (cursors, index)
            self._packed_keys = (dict(self._streams), packed, cursors)
        self._in_read, packed_keys, cursors = self._packed_keys
        head = [b"XREAD", b"BLOCK", str(BLOCK_MS).encode(), b"COUNT", str(READ_COUNT).encode(), b"STREAMS"]
        return b"".join(
            [
                b"*%d\r\n" % (len(head) + 2 * (len(cursors) + 1)),
                *(b"$%d\r\n%s\r\n" % (len(part), part) for part in head),
                packed_keys,
                *cursors,
                _bulk(self._wake_cursor),
            ]
        )

    def _dispatch(self, reply: Any) -> None:
        """Hand out an `XREAD` reply read off the wire (parsed as redis-py parses its own)."""
        for raw_key, raw_entries in xread_entries_by_key(self.redis.response_callbacks["XREAD"](reply)):
            key = decode(raw_key)
            if key == self._wake_key:
                self._wake_cursor = decode(raw_entries[-1][0])
                continue
            followed = self._in_read.get(key)
            if followed is None or self._streams.get(key) is not followed or not raw_entries:
                continue  # its followers left while the read was in flight (others may have come)
            entries = [Entry.from_redis(entry_id, fields) for entry_id, fields in raw_entries]
            followed.advance(Cursor(entries[-1].id))
            followed.active_at, followed.ended = time.monotonic(), entries[-1].type == END
            size = sum(entry.size for entry in entries)
            for subscription in followed.subscribers:
                subscription.deliver(entries, size)
