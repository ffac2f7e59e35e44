"""How the `StreamHub` learns which of its streams were written: Redis tells it, on one connection.

Every script that adds to a session's stream publishes on the channel named as the stream's key (`written` in
`_store/scripts/lib.lua`). `WriteNotices` keeps one connection subscribed to the channels of the streams the hub
follows, and passes each stream named on to the hub, which then reads only that stream. A stream is also passed
on when its subscription begins (Redis confirms it): what was written before Redis began to tell is read then.

A notice of the writers' appends (the tokens) carries the entries themselves (`carry` in `lib.lua`):
`carried_entries` reads it, and the hub hands them out without a read when they follow on from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from .._core.cursor import Cursor
from .._core.entry import Entry, decode
from .._store.redis import own_pool

__all__ = ["PING_EVERY", "WriteNotices", "carried_entries"]

PING_EVERY = 1.0
"""Seconds between the pings that prove the connection alive; one unanswered for `PING_TIMEOUT` drops it."""
PING_TIMEOUT = 5.0
CHUNK = 1000
"""Channels one SUBSCRIBE or UNSUBSCRIBE names at most."""


@dataclass(eq=False, kw_only=True)
class WriteNotices:
    """One connection subscribed to the channels of `streams()`; `on_written(key)` for each stream written."""

    redis: Redis
    streams: Callable[[], Collection[str]]
    """The keys of the streams to hear about (read whenever the subscriptions are brought in line)."""
    on_written: Callable[[str, str], None]
    """Called with a stream's key and what its notice carried (`""`: nothing, read the stream)."""
    _connection: AbstractConnection | None = None
    _subscribed: set[str] = field(default_factory=set)
    """The channels the connection was asked to subscribe to (and not to leave since)."""
    _syncing: asyncio.Task[None] | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _pinged_at: float | None = None
    """When the unanswered ping was sent (the loop's time), if one is."""
    _heard_at: float = 0.0

    async def hear(self) -> None:
        """Subscribe to every stream's channel and pass notices on, until cancelled; raises when the connection
        fails (the caller re-opens it: a new connection subscribes to everything again, and each confirmation
        has its stream read)."""
        pool = own_pool(self.redis, socket_timeout=None)  # the pings bound the wait instead
        connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        try:
            self._connection, self._subscribed, self._pinged_at = connection, set(), None
            self._heard_at = loop.time()
            self.sync()
            while True:
                # A subscriber's messages: arrays in RESP2, pushes in RESP3 (which answers a ping with PONG).
                reply: Any = await connection.read_response(timeout=math.inf, push_request=True)
                self._heard_at = loop.time()
                kind = decode(reply[0] if isinstance(reply, list) else reply).lower()
                if kind == "message":
                    self.on_written(decode(reply[1]), decode(reply[2]))
                elif kind == "subscribe":
                    self.on_written(decode(reply[1]), "")
                elif kind == "pong":
                    self._pinged_at = None
        finally:
            self._connection = None
            with contextlib.suppress(Exception):
                await asyncio.shield(pool.disconnect())

    def sync(self) -> None:
        """Bring the connection's subscriptions in line with `streams()`, soon (one send at a time, in order)."""
        if self._connection is not None and (self._syncing is None or self._syncing.done()):
            self._syncing = self._spawn(self._sync())

    async def _sync(self) -> None:
        # The connection of each send is the current one: a send that `hear` re-opened the connection under
        # goes on with the new connection, whose subscriptions start from none.
        while (connection := self._connection) is not None:
            wanted = set(self.streams())
            joined, left = wanted - self._subscribed, self._subscribed - wanted
            if not joined and not left:
                return
            self._subscribed = wanted
            commands = [("UNSUBSCRIBE", left), ("SUBSCRIBE", joined)]
            packed = [
                part
                for verb, keys in commands
                for chunk in _chunks(sorted(keys))
                for part in connection.pack_command(verb, *chunk)
            ]
            try:
                await connection.send_packed_command(packed, check_health=False)
            except Exception:  # `hear` meets the failure too, re-opens the connection and subscribes again
                if self._connection is connection:
                    return

    def check(self, now: float) -> None:
        """Called every tick (`now`: the loop's time): ping a quiet connection; drop one whose ping went
        unanswered (its `hear` raises, and is re-opened)."""
        connection = self._connection
        if connection is None:
            return
        if self._pinged_at is not None:
            if now - self._pinged_at > PING_TIMEOUT:
                self._pinged_at = None
                self._spawn(connection.disconnect(nowait=True))  # ends the read at once
        elif now - self._heard_at >= PING_EVERY:
            self._pinged_at = now
            self._spawn(self._ping(connection))  # its reply comes to `hear`

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def aclose(self) -> None:
        """Stop the sends still going (`hear` is its caller's to cancel)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    @staticmethod
    async def _ping(connection: AbstractConnection) -> None:
        with contextlib.suppress(RedisConnectionError, OSError):  # `hear` meets it too
            await connection.send_packed_command(connection.pack_command("PING"), check_health=False)


def _chunks(keys: list[str]) -> list[list[str]]:
    return [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]


def carried_entries(carried: str, after: tuple[int, int]) -> list[Entry] | None:
    """The entries a notice `carried` after the cursor `after` (a `Cursor.key`), if they follow on from it with
    none missing between (maybe none: all were read already); `None` if some were written between, or the notice
    is not one this release's scripts write: then the stream is read."""
    parts = carried.split("\0")
    if len(parts) % 4 != 1:
        return None
    try:
        if Cursor.key_of(parts[0]) > after:
            return None
        first = 1
        while first < len(parts) and Cursor.key_of(parts[first]) <= after:
            first += 4
        return [Entry.parse(*parts[i : i + 4]) for i in range(first, len(parts), 4)]
    except ValueError:  # an id or a body that is not one (JSON's error is one too)
        return None
