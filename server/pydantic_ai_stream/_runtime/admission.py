"""Admission: whether a run may start and how it starts, one module for every edge (gRPC `Run`, A2A) and the
library's `SessionHandle.submit`.

A run passes, in order: its caller authenticated (`Admission.authenticate`), its agent hosted (here, or by a
live worker) and one the caller may run (`check_agent`), a prompt that is not empty and within bounds, a server
that still accepts runs (`admit`); the run queue then takes it, within its scope's bound (`QueueFullError`),
as its `if_busy` policy says (`accept`): at once, refused, waiting behind the session's run, or first in the
session's line with that run cancelled. A run waiting behind another starts when a process that saw that one
end calls the one hook, `run_ended`. A run's id is made once, by `run_id_or_new`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from .._core.entry import Entry
from .._core.errors import (
    AgentNotAllowedError,
    CursorExpiredError,
    InvalidRequestError,
    ListenTimeoutError,
    RunExistsError,
    SessionBusyError,
    ShuttingDownError,
    StreamNotFoundError,
    UnknownAgentError,
)
from .._core.inputs import Attachment, InputBounds, check_attachment, first_error
from .._core.keys import excerpt, run_id_or_new
from .._core.names import BEGIN, END
from .._core.submission import BusyPolicy, Submission, Submitted
from .._durable.job import queued_member
from .._durable.queue import RunQueue
from .._read.handle import SessionHandle, SessionOwner
from .._store.results import ActiveRun
from .._store.stream import SessionStream
from .auth import Authenticator, AuthError, Caller

__all__ = ["Admission", "AdmissionOwner", "accept", "run_ended"]


async def run_ended(queue: RunQueue, stream: SessionStream, *, queued: str | None = None) -> None:
    """The one hook a process calls when it saw a run of the session end (its worker, its listeners, a cancel
    that ended it queued): the first run waiting behind it starts (`RunQueue.promote`). `queued`: the id of
    the run, ended before a worker claimed it, which stops counting in its scope now."""
    if queued is not None:
        keys = stream.keys
        await queue.release(keys.scope_id, queued_member(keys.user_id, keys.session_id, queued))
    await queue.promote(stream)


async def accept(
    handle: SessionHandle,
    queue: RunQueue,
    *,
    agent: str,
    body: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    if_busy: BusyPolicy = "reject",
    wait: float = 30,
    traceparent: str | None = None,
    context: Mapping[str, Any] | None = None,
    attachments: Sequence[Attachment] = (),
) -> Submitted:
    """Accept a run of `agent` on the session of `handle` into `queue`, as its `if_busy` policy says (see
    `SessionHandle.submit`); its Redis errors count as the `submit` operation's. `context` goes to the hosted
    agent's deps; `attachments` (`InvalidRequestError` for one that is not valid) follow the prompt's text,
    their summary in `begin`."""
    attachments = [check_attachment(n, attachment) for n, attachment in enumerate(attachments)]
    if attachments:
        body = {**(body or {}), "attachments": [attachment.summary() for attachment in attachments]}
    with handle.redis_errors_of("submit"):
        stream = handle.stream
        # Made here, not by the queue: a run that waits behind the session's run has its id before its `begin`.
        run_id = run_id_or_new(run_id)
        run = Submission(
            agent=agent,
            body=body,
            options=options,
            run_id=run_id,
            traceparent=traceparent,
            context=context,
            attachments=attachments,
        )
        try:
            return await queue.submit(stream, run)
        except RunExistsError:
            raise
        except SessionBusyError:
            if if_busy == "reject":
                raise
        interrupt = if_busy != "enqueue"
        waiting = await queue.wait_behind(stream, run, first=interrupt)
        if waiting is None:  # the session's run ended meanwhile
            return await queue.submit(stream, run)
        if not interrupt:
            return waiting
        return await _interrupt(handle, queue, run_id, rollback=if_busy == "rollback", wait=wait) or waiting


async def _interrupt(
    handle: SessionHandle, queue: RunQueue, run_id: str, *, rollback: bool, wait: float
) -> Submitted | None:
    """Cancel the session's run and start the run `run_id`, first in the session's line, once it ended
    (within `wait` seconds); `None` if it still waits."""
    stream = handle.stream
    bounds = await stream.bounds()
    await handle.mark_cancelled(rollback=rollback)
    if bounds is not None and bounds.newest_type != END:
        # Ended by its worker, by the one that takes it over if its worker died, or here if queued; a
        # cursor expired or a `begin`: the next run replaced the stream.
        entries = handle.listen_entries(after=bounds.newest, wait=wait, timeout=wait)
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
    await run_ended(queue, stream)
    with contextlib.suppress(CursorExpiredError):
        for begin in await stream.read_range(after="0-0", count=1):
            if begin.type == BEGIN and begin.body.get("run_id") == run_id:
                return Submitted(run_id=run_id, begin_event_id=begin.id)
    return None


class AdmissionOwner(SessionOwner, Protocol):
    """What admission uses of its runtime (`Runtime` is one): a session handle's needs, and the run queue."""

    @property
    def queue(self) -> RunQueue: ...


@dataclass(kw_only=True)
class Admission:
    """The rules a caller's run passes to start, and its submit, in the order every edge applies them; the
    edges only translate (requests in, errors out as their status codes)."""

    runtime: AdmissionOwner
    agents: Collection[str]
    """The agents hosted here."""
    authenticator: Authenticator
    max_prompt_bytes: int
    """Largest prompt accepted, in bytes as stored in `begin` (UTF-8 JSON, control characters escaped)."""
    fleet: Callable[[], Awaitable[Collection[str]]] | None = field(default=None, repr=False)
    """The agents the live workers host, asked for a run of an agent not hosted here (`None`: no workers)."""
    accepting: bool = True
    """False once shutdown began: new runs get `ShuttingDownError`."""
    bounds: InputBounds = field(default_factory=InputBounds)
    """How large a run's context and attachments may be."""
    contexts: Mapping[str, TypeAdapter[Any]] = field(default_factory=dict)
    """The context models of the agents hosted here that declare one (`context_adapter`), by agent name."""

    async def authenticate(self, values: Sequence[str]) -> Caller:
        """The caller behind a call's `authorization` values (gRPC metadata entries or HTTP headers); `AuthError`
        if none is valid."""
        if len(values) > 1:  # proxies and clients disagree on which one counts: accept none
            raise AuthError("more than one 'authorization' metadata entry")
        return await self.authenticator.authenticate(values[0] if values else None)

    def check_agent(self, caller: Caller, name: str, *, also: Collection[str] = frozenset()) -> None:
        """Raise `UnknownAgentError` unless agent `name` is hosted here (or `also` names it: the agents of
        the live workers), `AgentNotAllowedError` unless `caller` may run it."""
        if name not in self.agents and name not in also:
            hosted = ", ".join(sorted(agent for agent in {*self.agents, *also} if caller.may_run(agent))) or "none"
            raise UnknownAgentError(f"unknown agent {excerpt(name)}; hosted: {hosted}")
        if not caller.may_run(name):
            raise AgentNotAllowedError(f"you may not run agent {name!r}")

    async def admit(
        self, caller: Caller, *, agent: str, prompt: str, session_id: str, anywhere: bool = False
    ) -> SessionHandle:
        """Check that `caller` may start a run of `agent` with `prompt` on its session `session_id` now, and
        return that session to submit the run to. `anywhere`: an agent the live workers host counts as hosted
        (gRPC `Run`; A2A runs the agents hosted here)."""
        workers = self.fleet if anywhere and agent not in self.agents else None
        self.check_agent(caller, agent, also=await workers() if workers is not None else frozenset())
        if not prompt.strip():
            raise InvalidRequestError("prompt must not be empty")
        # Measured as stored: JSON escapes a control character to six bytes.
        if (stored := len(json.dumps(prompt, ensure_ascii=False).encode())) > self.max_prompt_bytes:
            raise InvalidRequestError(
                f"prompt is {stored} bytes as stored (UTF-8 JSON); the limit is {self.max_prompt_bytes}"
            )
        if not self.accepting:
            raise ShuttingDownError("server is shutting down; retry on another replica")
        return self.session(caller, session_id)

    def check_inputs(
        self, *, agent: str, context: Mapping[str, Any] | None, attachments: Sequence[Attachment]
    ) -> tuple[dict[str, Any] | None, list[Attachment]]:
        """A run's context and attachments within their bounds (`InvalidRequestError` beyond), the context
        validated against the agent's context model where the agent is hosted here and declares one."""
        checked = self.bounds.context(context) if context is not None else None
        if (adapter := self.contexts.get(agent)) is not None:
            try:
                adapter.validate_python(checked or {})
            except ValidationError as e:
                raise InvalidRequestError(f"context does not validate for agent {agent!r}: {first_error(e)}") from None
        return checked, self.bounds.attachments(attachments)

    async def submit(
        self,
        session: SessionHandle,
        *,
        agent: str,
        prompt: str,
        options: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        if_busy: BusyPolicy = "reject",
        traceparent: str | None = None,
        context: Mapping[str, Any] | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> Submitted:
        """Submit the run `admit` let in, with the inputs `check_inputs` let in: its prompt is its `begin`'s
        `user_prompt` (see `accept`)."""
        body = {"user_prompt": prompt}
        return await accept(
            session,
            self.runtime.queue,
            agent=agent,
            body=body,
            options=options,
            run_id=run_id,
            if_busy=if_busy,
            traceparent=traceparent,
            context=context,
            attachments=attachments,
        )

    def stop_accepting(self) -> None:
        """Refuse new runs from now on (`ShuttingDownError`): the server is shutting down."""
        self.accepting = False

    def session(self, caller: Caller, session_id: str) -> SessionHandle:
        """The caller's session (the ids checked: `InvalidIdError` before anything else happens)."""
        return SessionHandle.of(self.runtime, scope_id=caller.scope_id, user_id=caller.user_id, session_id=session_id)

    async def run_of_allowed_agent(self, caller: Caller, session: SessionHandle) -> str | None:
        """For a caller limited to some agents: the id of the session's current run, `AgentNotAllowedError`
        unless its `begin` names one of them (`None`: no run, or a caller that may run every agent)."""
        if caller.agents is None:  # nothing to check: no read
            return None
        try:
            first = await session.stream.read_range(after="0-0", count=1)
        except CursorExpiredError:  # its `begin` trimmed away: the run's agent is not known
            raise AgentNotAllowedError(
                "the session's run is of an agent no longer known, which you may not run"
            ) from None
        if not first:
            return None
        return self.check_run_agent(caller, first[0])

    def check_run_agent(self, caller: Caller, begin: Entry) -> str | None:
        """For a caller limited to some agents, the run id of `begin`, `AgentNotAllowedError` unless it may run
        its agent (a `begin` that names none is no agent a limited caller may run); `None` for a caller that
        may run every agent."""
        if caller.agents is None:
            return None
        agent = begin.body.get("agent") if begin.type == BEGIN else None
        run_id = begin.body.get("run_id")
        if not isinstance(agent, str) or not isinstance(run_id, str) or not caller.may_run(agent):
            named = f"agent {excerpt(agent)}" if isinstance(agent, str) else "an agent it does not name"
            raise AgentNotAllowedError(f"the session's run is of {named}, which you may not run")
        return run_id

    async def allowed_runs(self, caller: Caller, runs: Sequence[ActiveRun]) -> list[ActiveRun]:
        """Of the caller's `runs`, those of agents it may run (all, for a caller that may run every agent)."""
        if caller.agents is None:
            return list(runs)
        allowed = await asyncio.gather(*(self._allowed_run(caller, run.session_id) for run in runs))
        return [run for run, run_id in zip(runs, allowed, strict=True) if run_id == run.run_id]

    async def _allowed_run(self, caller: Caller, session_id: str) -> str | None:
        """`run_of_allowed_agent` of the session, `None` where it is not allowed."""
        try:
            return await self.run_of_allowed_agent(caller, self.session(caller, session_id))
        except AgentNotAllowedError:
            return None
