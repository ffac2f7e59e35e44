"""Read-only handles on sessions, for any process: listen to a session's events, cancel its run, list
the live ones. They write nothing but the cancel mark; a run's own writes go through `LiveRun`, a new run's
through admission (`_runtime/admission.py`), which `SessionHandle.submit` passes it on to."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from typing_extensions import Unpack

from .._core.deferred import Responded, ToolAnswer
from .._core.entry import Entry
from .._core.errors import ListenTimeoutError, StreamNotFoundError
from .._core.keys import SessionKeys, cancel_channel, check_id
from .._core.metrics import Metrics
from .._core.settings import Settings
from .._core.submission import RunOptions, Submitted
from .._store.active import active_members, active_sessions
from .._store.redis import AsyncRedis
from .._store.results import ActiveRun, CancelState
from .._store.stream import SessionStream
from .hub import StreamHub
from .listen import listen_batches

__all__ = ["ListenOptions", "SessionHandle", "SessionOwner", "live_sessions"]


class ListenOptions(TypedDict, total=False):
    """The options of `SessionHandle.listen_entries`, for callers that pass them on."""

    wait: float
    timeout: float | None
    after: str | None
    heartbeat: float | None


class SessionOwner(Protocol):
    """What a handle uses of its runtime (`Runtime` is one): its client, settings, reader and metrics, and the
    two hooks of the layers above, which a read-only handle passes on: admission (`submit`) and the start of the
    run waiting behind one that ended (`run_ended`)."""

    @property
    def redis(self) -> AsyncRedis: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def hub(self) -> StreamHub | None: ...

    @property
    def metrics(self) -> Metrics: ...

    def keys(self, *, scope_id: int, user_id: int, session_id: str) -> SessionKeys: ...

    def stream(self, keys: SessionKeys) -> SessionStream: ...

    def active_key(self, *, scope_id: int, user_id: int) -> str: ...

    async def submit(self, handle: SessionHandle, *, agent: str, **options: Unpack[RunOptions]) -> Submitted: ...

    async def run_ended(self, stream: SessionStream, *, queued: str | None = None) -> None: ...

    async def respond(self, handle: SessionHandle, *, run_id: str, answers: Sequence[ToolAnswer]) -> Responded: ...


@dataclass(frozen=True, kw_only=True)
class SessionHandle:
    """One session seen from any process: its events, whether a run of it is live, and its cancel."""

    runtime: SessionOwner
    """Whose reader, prefix and retention it uses (a `Runtime`)."""
    keys: SessionKeys

    @classmethod
    def of(cls, runtime: SessionOwner, *, scope_id: int, user_id: int, session_id: str) -> SessionHandle:
        """The handle of a session under `runtime`; raises `InvalidIdError` for unsafe ids, before any I/O."""
        return cls(runtime=runtime, keys=runtime.keys(scope_id=scope_id, user_id=user_id, session_id=session_id))

    @property
    def stream(self) -> SessionStream:
        """The Redis side of the session."""
        return self.runtime.stream(self.keys)

    async def is_live(self) -> bool:
        """Whether a run of this session is live (and not being cancelled)."""
        return await self.stream.is_live()

    async def cancel(self, *, rollback: bool = False, run_id: str | None = None) -> bool:
        """Stop the session's live run, wherever it runs (a queued one ends at once); `True` if there was
        one to stop. `rollback`: its messages are dropped, not saved (the conversation stays as before it).
        `run_id`: only if the session's live or queued run is that one (a later run of the session is left alone);
        `True` also if it was cancelled already, so a retry whose first reply was lost answers as the first did.
        A durable run whose worker died is ended by the worker that takes it over, never resumed."""
        return await self.cancel_run(rollback=rollback, run_id=run_id) is not CancelState.NONE

    async def cancel_run(self, *, rollback: bool = False, run_id: str | None = None) -> CancelState:
        """`cancel`, saying what it found: `ALREADY` when the run named was cancelled before (a retry, or a
        second cancel: a caller for whom a second cancel is an error tells them apart by its own records)."""
        if run_id is not None:
            check_id("run_id", run_id)
        with self.redis_errors_of("cancel"):
            return await self.mark_cancelled(rollback=rollback, run_id=run_id)

    async def mark_cancelled(self, *, rollback: bool, run_id: str | None = None) -> CancelState:
        """`cancel_run` with its Redis errors left to the caller to count (admission's interrupt: a submit's)."""
        channel = cancel_channel(self.runtime.settings.redis_prefix)
        state, run_id = await self.stream.cancel(channel, rollback=rollback, run_id=run_id)
        if state is CancelState.ENDED:  # a queued run, ended here: no worker sees it end
            await self.runtime.run_ended(self.stream, queued=run_id)
        return state

    async def submit(self, *, agent: str, **options: Unpack[RunOptions]) -> Submitted:
        """Accept a run of `agent` into the run queue for a worker to execute: admission's `submit` (this handle
        only passes it on), with `body=None`, `options=None`, `run_id=None`, `if_busy="reject"`, `wait=30`,
        `traceparent=None`.

        When the session has a queued or live run, `if_busy` says what happens: `"reject"`
        (`SessionBusyError`), `"enqueue"` (this run waits behind it and the runs already waiting, and starts
        when they ended; it counts as queued in its scope), `"interrupt"` (this run goes first in the
        session's line, before the runs already waiting, which wait on behind it; the session's run is
        cancelled, its partial conversation kept, and this one starts once its `end` is written: returned
        started, or still `waiting` if that took over `wait` seconds) or `"rollback"` (as interrupt, the
        cancelled run's messages dropped). The run's span continues the W3C `traceparent`.
        """
        return await self.runtime.submit(self, agent=agent, **options)

    async def respond(self, run_id: str, answers: Sequence[ToolAnswer]) -> Responded:
        """Answer deferred tool calls the session's run `run_id` waits on (approvals, external results); once every
        call has an answer the run goes on, on whichever worker claims it, in the same stream. Idempotent: a
        retry answers as the first did. Raises `InvalidRequestError` (no answers, an id twice, an unknown call,
        an answer of the wrong kind), `RunNotFoundError`, `NotWaitingError` (it does not wait, or a call has
        another answer), writing nothing."""
        with self.redis_errors_of("respond"):
            return await self.runtime.respond(self, run_id=run_id, answers=answers)

    def redis_errors_of(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """Count the Redis errors of `operation` in the runtime's metrics."""
        return self.runtime.metrics.redis_errors_of(operation)

    def listen_entries(
        self,
        *,
        wait: float = 3,
        timeout: float | None = 60,
        after: str | None = None,
        heartbeat: float | None = None,
    ) -> AsyncIterator[Entry | None]:
        """The session's entries (shared with other listeners: do not change them) up to and including
        `end`, from the current run's `begin` or strictly after the entry id `after`; with `heartbeat`,
        also `None` after each `heartbeat` seconds of silence.

        Raises `StreamNotFoundError` when no stream appears within `wait` seconds, `ListenTimeoutError`
        after `timeout` seconds of silence (`None`: no limit), `CursorExpiredError`/`CursorAheadError`
        for a cursor outside the stream.
        """
        return _one_by_one(self.listen_batches(wait=wait, timeout=timeout, after=after, heartbeat=heartbeat))

    def listen_batches(
        self,
        *,
        wait: float = 3,
        timeout: float | None = 60,
        after: str | None = None,
        heartbeat: float | None = None,
    ) -> AsyncIterator[list[Entry] | None]:
        """`listen_entries` in the batches the entries arrived in (never empty; `None`: a heartbeat), for a
        listener that sends several at once when it is behind."""
        batches = listen_batches(
            self.stream,
            hub=self.runtime.hub,
            wait=wait,
            timeout=timeout,
            after=after,
            grace_ms=self.runtime.settings.stream_retention * 1000,
            heartbeat=heartbeat,
            on_lost=self._lost_run_ended,
        )
        return self.runtime.metrics.listening(batches)

    async def _lost_run_ended(self) -> None:
        """A run that died was ended by its listeners (`run lost`, then `end`), and they alone see it end:
        they start the run waiting behind it (`enqueue`), before passing its `end` on."""
        await self.runtime.run_ended(self.stream)

    async def listen(
        self, *, wait: float = 3, timeout: float = 60, serialize: bool = True, after: str | None = None
    ) -> AsyncGenerator[dict[str, Any] | str, None]:
        """`{"id", "type", "origin", "body"}` per entry (as JSON if `serialize`) until `end`; stops
        quietly where `listen_entries` raises `StreamNotFoundError` or `ListenTimeoutError`."""
        with contextlib.suppress(StreamNotFoundError, ListenTimeoutError):
            async for entry in self.listen_entries(wait=wait, timeout=timeout, after=after):
                if entry is not None:
                    event = entry.as_dict()
                    yield json.dumps(event) if serialize else event


async def _one_by_one(batches: AsyncIterator[list[Entry] | None]) -> AsyncIterator[Entry | None]:
    try:
        async for batch in batches:
            if batch is None:
                yield None
            else:
                for entry in batch:
                    yield entry
    finally:
        await batches.aclose()  # type: ignore[attr-defined]


async def live_sessions(runtime: SessionOwner, *, scope_id: int, user_id: int) -> list[ActiveRun]:
    """The user's sessions with a queued or live, uncancelled run, oldest first; forgets those whose run
    died. Reads the user's active set (no keyspace scan)."""
    redis = runtime.redis
    members = await active_members(redis, runtime.active_key(scope_id=scope_id, user_id=user_id))
    keys = [runtime.keys(scope_id=scope_id, user_id=user_id, session_id=m) for m in members]
    return await active_sessions(redis, keys)
