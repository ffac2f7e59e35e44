"""Read-only handles on sessions, for any process: listen to a session's events, cancel its run, list
the live ones. They write nothing but the cancel mark; a run's own writes go through `LiveRun`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .._core.entry import Entry
from .._core.errors import CursorExpiredError, ListenTimeoutError, RunExistsError, SessionBusyError, StreamNotFoundError
from .._core.keys import SessionKeys, cancel_channel, check_id
from .._core.names import BEGIN, END, ERROR, RUN_LOST
from .._durable.job import queued_member
from .._durable.queue import Submitted
from .._runtime.runtime import Runtime
from .._store.active import active_members, active_sessions
from .._store.results import ActiveRun, CancelState
from .._store.stream import SessionStream
from .listen import listen

__all__ = ["BusyPolicy", "ListenOptions", "SessionHandle", "live_sessions"]

BusyPolicy = Literal["reject", "enqueue", "interrupt", "rollback"]
"""What a new run does on a session that has a queued or live run (see `SessionHandle.submit`)."""


class ListenOptions(TypedDict, total=False):
    """The options of `SessionHandle.listen_entries`, for callers that pass them on."""

    wait: float
    timeout: float | None
    after: str | None
    heartbeat: float | None


@dataclass(frozen=True, kw_only=True)
class SessionHandle:
    """One session seen from any process: its events, whether a run of it is live, and its cancel."""

    runtime: Runtime
    """Whose reader, prefix and retention it uses."""
    keys: SessionKeys

    @classmethod
    def of(cls, runtime: Runtime, *, scope_id: int, user_id: int, session_id: str) -> SessionHandle:
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
        with self._redis_errors("cancel"):
            return await self._cancel(rollback=rollback, run_id=run_id)

    async def _cancel(self, *, rollback: bool, run_id: str | None = None) -> CancelState:
        channel = cancel_channel(self.runtime.settings.redis_prefix)
        state, run_id = await self.stream.cancel(channel, rollback=rollback, run_id=run_id)
        if state is CancelState.ENDED:
            keys = self.keys
            await self.runtime.queue.release(keys.scope_id, queued_member(keys.user_id, keys.session_id, run_id))
            await self.runtime.queue.promote(self.stream)
        return state

    async def submit(
        self,
        *,
        agent: str,
        body: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        if_busy: BusyPolicy = "reject",
        wait: float = 30,
        traceparent: str | None = None,
    ) -> Submitted:
        """Accept a run of `agent` into the run queue (see `RunQueue.submit`) for a worker to execute.

        When the session has a queued or live run, `if_busy` says what happens: `"reject"`
        (`SessionBusyError`), `"enqueue"` (this run waits behind it and the runs already waiting, and starts
        when they ended; it counts as queued in its scope), `"interrupt"` (this run goes first in the
        session's line, before the runs already waiting, which wait on behind it; the session's run is
        cancelled, its partial conversation kept, and this one starts once its `end` is written: returned
        started, or still `waiting` if that took over `wait` seconds) or `"rollback"` (as interrupt, the
        cancelled run's messages dropped). The run's span continues the W3C `traceparent`.
        """
        with self._redis_errors("submit"):
            return await self._submit(
                agent=agent,
                body=body,
                options=options,
                run_id=run_id,
                if_busy=if_busy,
                wait=wait,
                traceparent=traceparent,
            )

    async def _submit(
        self,
        *,
        agent: str,
        body: Mapping[str, Any] | None,
        options: Mapping[str, Any] | None,
        run_id: str | None,
        if_busy: BusyPolicy,
        wait: float,
        traceparent: str | None,
    ) -> Submitted:
        keys = self.keys
        queue = self.runtime.queue
        run_id = check_id("run_id", run_id) if run_id is not None else uuid.uuid4().hex

        async def submitted() -> Submitted:
            return await queue.submit(
                self.stream,
                scope_id=keys.scope_id,
                user_id=keys.user_id,
                agent=agent,
                body=body,
                options=options,
                run_id=run_id,
                traceparent=traceparent,
            )

        try:
            return await submitted()
        except RunExistsError:
            raise
        except SessionBusyError:
            if if_busy == "reject":
                raise
        interrupt = if_busy != "enqueue"
        waiting = await queue.wait_behind(
            self.stream,
            scope_id=keys.scope_id,
            user_id=keys.user_id,
            agent=agent,
            body=body,
            options=options,
            run_id=run_id,
            traceparent=traceparent,
            first=interrupt,
        )
        if waiting is None:  # the session's run ended meanwhile
            return await submitted()
        if not interrupt:
            return waiting
        return await self._interrupt(run_id, rollback=if_busy == "rollback", wait=wait) or waiting

    async def _interrupt(self, run_id: str, *, rollback: bool, wait: float) -> Submitted | None:
        """Cancel the session's run and start the run `run_id`, first in the session's line, once it ended
        (within `wait` seconds); `None` if it still waits."""
        bounds = await self.stream.bounds()
        await self._cancel(rollback=rollback)
        if bounds is not None and bounds.newest_type != END:
            # Ended by its worker, by the one that takes it over if its worker died, or here if queued; a
            # cursor expired or a `begin`: the next run replaced the stream.
            entries = self.listen_entries(after=bounds.newest, wait=wait, timeout=wait)
            try:
                with contextlib.suppress(TimeoutError, ListenTimeoutError, StreamNotFoundError, CursorExpiredError):
                    async with asyncio.timeout(wait):
                        async for entry in entries:
                            if entry is not None and entry.type in (END, BEGIN):
                                break
            finally:
                if isinstance(entries, AsyncGenerator):  # let go of the reader now, not when collected
                    await entries.aclose()
        # Whoever saw the run end started the first waiting run; this run may have become first after that.
        await self.runtime.queue.promote(self.stream)
        with contextlib.suppress(CursorExpiredError):
            for begin in await self.stream.read_range(after="0-0", count=1):
                if begin.type == BEGIN and begin.body.get("run_id") == run_id:
                    return Submitted(run_id=run_id, begin_event_id=begin.id)
        return None

    def _redis_errors(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """Count the Redis errors of `operation` (if the runtime has telemetry)."""
        telemetry = self.runtime.telemetry
        return contextlib.nullcontext() if telemetry is None else telemetry.redis_errors_of(operation)

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
        entries = self._starting_waiting(
            listen(
                self.stream,
                hub=self.runtime.hub,
                wait=wait,
                timeout=timeout,
                after=after,
                grace_ms=self.runtime.settings.stream_retention * 1000,
                heartbeat=heartbeat,
            )
        )
        telemetry = self.runtime.telemetry
        return entries if telemetry is None else telemetry.listening(entries)

    async def _starting_waiting(self, entries: AsyncIterator[Entry | None]) -> AsyncIterator[Entry | None]:
        """`entries`; a run that died is ended by its listeners (`run lost`, then `end`), and they alone see it
        end: they start the run waiting behind it (`enqueue`), before passing its `end` on."""
        lost = False
        try:
            async for entry in entries:
                if entry is not None:
                    if entry.type == END and lost:
                        await self.runtime.queue.promote(self.stream)
                    lost = entry.type == ERROR and entry.body.get("msg") == RUN_LOST
                yield entry
        finally:
            await entries.aclose()  # type: ignore[attr-defined]

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


async def live_sessions(runtime: Runtime, *, scope_id: int, user_id: int) -> list[ActiveRun]:
    """The user's sessions with a queued or live, uncancelled run, oldest first; forgets those whose run
    died. Reads the user's active set (no keyspace scan)."""
    redis = runtime.redis
    members = await active_members(redis, runtime.active_key(scope_id=scope_id, user_id=user_id))
    keys = [runtime.keys(scope_id=scope_id, user_id=user_id, session_id=m) for m in members]
    return await active_sessions(redis, keys)
