"""`Deps`: a session's handle for writing its run's events, listening to them and cancelling the run."""

from __future__ import annotations

import contextlib
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import CancellationToken

from ._errors import (
    LeaseLostError,
    ListenTimeoutError,
    PydanticAIStreamError,
    RunExistsError,
    SessionBusyError,
    StreamNotFoundError,
)
from ._events import EventMapper
from ._keys import SessionKeys, cancel_channel, check_id
from ._lease import Lease
from ._listen import listen
from ._names import ERROR, EVENT, INFO, ORIGIN_PYDANTIC_AI
from ._redis import AsyncRedis, Entry, OpenState, SessionStream
from ._runtime import Runtime, session_keys
from ._settings import settings
from ._writer import StreamWriter

__all__ = ["Deps"]


@dataclass(kw_only=True)
class Deps(ABC):
    """Agent dependencies bound to one session; subclass it (as a dataclass) and say its scope."""

    redis: AsyncRedis
    user_id: int
    session_id: str
    run_id: str | None = None
    """This run's id; set by `start()` when not given (a caller-chosen id makes retries recognisable)."""
    runtime: Runtime | None = field(default=None, repr=False, compare=False)
    """The owner of the background work its runs and listeners use; `None`: `Runtime.default(redis)`."""

    _mapper: EventMapper = field(default_factory=EventMapper, init=False, repr=False, compare=False)
    _lease: Lease | None = field(default=None, init=False, repr=False, compare=False)
    _writer: StreamWriter | None = field(default=None, init=False, repr=False, compare=False)
    _begin_event_id: str | None = field(default=None, init=False, repr=False, compare=False)
    _generated_run_id: str | None = field(default=None, init=False, repr=False, compare=False)

    @abstractmethod
    def get_scope_id(self) -> int:
        """The tenant/organisation the session belongs to (the key's second segment)."""

    # Keys and stream

    def key(self) -> str:
        """The session's stream key, `{prefix}:{scope_id}:{user_id}:{session_id}`."""
        return self.keys().stream

    def key_live(self) -> str:
        """The session's live flag key, `<stream key>:live`."""
        return self.keys().live

    def keys(self) -> SessionKeys:
        """All keys of this session; raises `InvalidIdError` for ids that could escape their key space."""
        config = self.runtime.settings if self.runtime is not None else settings
        return session_keys(
            config, self.redis, scope_id=self.get_scope_id(), user_id=self.user_id, session_id=self.session_id
        )

    def get_runtime(self) -> Runtime:
        """The runtime its runs and listeners use: `runtime`, or the default one of `redis`."""
        return self.runtime if self.runtime is not None else Runtime.default(self.redis)

    def _stream(self) -> SessionStream:
        return self.get_runtime().stream(self.keys())

    @property
    def cancellation_token(self) -> CancellationToken | None:
        """The pydantic-ai token a cancel of this run fires; `None` until `start()`."""
        return None if self._lease is None else self._lease.token

    @property
    def begin_event_id(self) -> str | None:
        """Stream entry id of this run's `begin` (set by `start()`)."""
        return self._begin_event_id

    @property
    def lease_lost(self) -> bool:
        """Whether the run lost its live flag (it must stop without saving)."""
        return self._lease is not None and self._lease.lost

    # Run lifecycle

    async def start(self, *, body: dict[str, Any] | None = None) -> None:
        """Take the session's live flag and write `begin` (plus `body`) to a fresh stream.

        Raises `SessionBusyError`, writing nothing, if another run of the session is live, and
        `RunExistsError` if this `run_id` is the session's live run or its last one (a retry).
        """
        stream = self._stream()
        # A run id this Deps generated for an earlier run is not reused for the next one.
        requested = self.run_id if self.run_id != self._generated_run_id else None
        run_id = check_id("run_id", requested) if requested is not None else uuid.uuid4().hex
        runtime = self.get_runtime()
        keeper = runtime.leases
        # A Redis that cannot answer within a lease's lifetime could not keep the run's lease either.
        await keeper.ready(timeout=runtime.settings.lease_ttl)
        lease_ms = keeper.lease_ms
        ids = {"session_id": self.session_id, "run_id": run_id}
        begin = {**ids, **(body or {}), **ids}  # the ids first, as `open` needs, and not overridden by `body`
        try:
            state, begin_event_id = await stream.open(
                run_id=run_id, lease_ms=lease_ms, begin=begin, nonce=uuid.uuid4().hex
            )
        except BaseException:
            keeper.release(None)
            raise
        if state is not OpenState.OPENED:
            keeper.release(None)
            if state is OpenState.EXISTS:
                raise RunExistsError(self.session_id, run_id=run_id, begin_event_id=begin_event_id)
            raise SessionBusyError(self.session_id)
        self._begin_event_id = begin_event_id
        self._generated_run_id = None if requested is not None else run_id
        self.run_id = run_id
        self._mapper = EventMapper()
        self._lease = Lease(stream=stream, run_id=run_id, keeper=keeper)
        self._writer = StreamWriter(stream=stream, run_id=run_id, combiner=runtime.writes, last_id=begin_event_id)
        keeper.hold(self._lease)

    async def stop(self, grace_period: int = 5) -> None:
        """Write `end`, release the live flag, and delete the stream `grace_period` seconds later."""
        lease = self._lease
        if lease is None:
            return
        try:
            with contextlib.suppress(LeaseLostError):  # then `close` finds the lease gone and writes nothing
                await self.flush()
            await lease.stream.close(
                run_id=lease.run_id, grace_ms=max(1, grace_period) * 1000, end={"run_id": lease.run_id}
            )
        finally:
            lease.keeper.release(lease)
            self._lease = self._writer = None

    async def is_live(self) -> bool:
        """Whether a run of this session is live (and not being cancelled)."""
        return await self._stream().is_live()

    async def cancel(self) -> bool:
        """Stop the session's live run, wherever it runs; `True` if there was one to stop."""
        return await self._stream().cancel(cancel_channel(self.get_runtime().settings.redis_prefix))

    async def listen(
        self, *, wait: int = 3, timeout: int = 60, serialize: bool = True, after: str | None = None
    ) -> AsyncGenerator[dict[str, Any] | str, None]:
        """Yield the session's events (`{"id", "type", "origin", "body"}`, as JSON if `serialize`) until `end`.

        From the current run's `begin`, or strictly after the event id `after`. Stops quietly after
        `wait` seconds if the stream does not appear, or `timeout` seconds of silence once it has
        (`listen_entries` raises instead, so a caller can tell that from the run's end).
        """
        with contextlib.suppress(StreamNotFoundError, ListenTimeoutError):
            async for entry in self.listen_entries(wait=wait, timeout=timeout, after=after):
                if entry is not None:
                    event = entry.as_dict()
                    yield json.dumps(event) if serialize else event

    def listen_entries(
        self,
        *,
        wait: float = 3,
        timeout: float | None = 60,
        after: str | None = None,
        heartbeat: float | None = None,
    ) -> AsyncIterator[Entry | None]:
        """`listen` as typed `Entry`s (shared with other listeners: do not change them); with
        `heartbeat`, also `None` after each `heartbeat` seconds of silence.

        Ends only after `end` (or at once when resumed after it); raises `StreamNotFoundError` when no
        stream appears within `wait`, `ListenTimeoutError` after `timeout` seconds of silence (`None`:
        no limit), `CursorExpiredError`/`CursorAheadError` for a cursor outside the stream.
        """
        return listen(
            self._stream(),
            hub=self.get_runtime().hub,
            wait=wait,
            timeout=timeout,
            after=after,
            grace_ms=self.get_runtime().settings.stream_retention * 1000,
            heartbeat=heartbeat,
        )

    # Event emission

    async def add(self, *, type: str, origin: str, body: Mapping[str, Any] | None = None) -> None:
        """Append an entry to the stream of the live run started by this `Deps` (queued, in order)."""
        if self._writer is None:
            raise PydanticAIStreamError("no run is live on this Deps: call start() (or run()) first")
        await self._guarded(self._writer.add(type, origin, body))

    async def flush(self) -> None:
        """Wait until every event added so far is in Redis (`add` queues; writes go one batch at a time)."""
        if self._writer is not None:
            await self._guarded(self._writer.flush())

    async def _guarded(self, write: Awaitable[None]) -> None:
        try:
            await write
        except LeaseLostError:
            if self._lease is not None:
                self._lease.lost = True
            raise

    async def add_error(self, body: dict[str, Any], origin: str = "developer") -> None:
        """Append an `error` entry."""
        await self.add(type=ERROR, origin=origin, body=body)

    async def add_info(self, body: dict[str, Any], origin: str = "developer") -> None:
        """Append an `info` entry."""
        await self.add(type=INFO, origin=origin, body=body)

    async def add_node_begin(self, node: object = None) -> None:
        """Append `llm-begin`: a model request node starts."""
        await self.add(type=EVENT, origin=ORIGIN_PYDANTIC_AI, body=self._mapper.node_begin())

    async def add_node_end(self) -> None:
        """Append `llm-end`: the model's response has streamed in full."""
        await self.add(type=EVENT, origin=ORIGIN_PYDANTIC_AI, body=self._mapper.node_end())

    async def add_node_event(self, event: object) -> None:
        """Append the body of a pydantic-ai stream event, if it carries anything to show."""
        body = self._mapper.event(event)
        if body is not None:
            await self.add(type=EVENT, origin=ORIGIN_PYDANTIC_AI, body=body)
