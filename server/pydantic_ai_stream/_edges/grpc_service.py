"""The gRPC service: translates `AgentStreamService` calls onto the library, and status codes back.

It holds no runtime logic of its own: the run queue takes runs, a `SessionHandle` listens, cancels and lists;
this module authenticates, validates requests, sends events (converted by `_proto`) and maps errors to codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from pydantic_ai.agent import AbstractAgent
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._core.entry import Entry
from .._core.errors import (
    AgentNotAllowedError,
    CursorAheadError,
    CursorExpiredError,
    InvalidIdError,
    InvalidRequestError,
    ListenTimeoutError,
    QueueFullError,
    RunExistsError,
    SessionBusyError,
    ShuttingDownError,
    StreamNotFoundError,
    UnknownAgentError,
)
from .._core.keys import excerpt
from .._core.names import BEGIN
from .._durable.fleet import fleet_agents
from .._read.handle import BusyPolicy, SessionHandle, live_sessions
from .._runtime.auth import Authenticator, AuthError, Caller
from .._runtime.runtime import Runtime
from .._store.redis import AsyncRedis
from ..v1 import stream_pb2 as pb
from ..v1 import stream_pb2_grpc as pb_grpc
from .proto import ListenResponseCache

__all__ = ["DEFAULT_MAX_PROMPT_BYTES", "AgentStreamServicer", "status_of", "statuses"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SETTINGS = frozenset(
    {"temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty"}
)
"""Model settings a `Run` may pass unless the server is told otherwise."""

DEFAULT_MAX_PROMPT_BYTES = 3_670_016
"""3.5 MiB: a `begin` carrying the prompt stays within a default gRPC client's 4 MiB receive limit."""


_HEARTBEAT = pb.ListenResponse(heartbeat=pb.Heartbeat())
_BUSY_POLICIES: dict[int, BusyPolicy] = {
    pb.BUSY_POLICY_UNSPECIFIED: "reject",
    pb.BUSY_POLICY_REJECT: "reject",
    pb.BUSY_POLICY_INTERRUPT: "interrupt",
    pb.BUSY_POLICY_ROLLBACK: "rollback",
    pb.BUSY_POLICY_ENQUEUE: "enqueue",
}


_STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (UnknownAgentError, grpc.StatusCode.NOT_FOUND),
    (AgentNotAllowedError, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (SessionBusyError, grpc.StatusCode.ALREADY_EXISTS),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CursorExpiredError, grpc.StatusCode.OUT_OF_RANGE),
    (CursorAheadError, grpc.StatusCode.OUT_OF_RANGE),
    (StreamNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ListenTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (RedisConnectionError, grpc.StatusCode.UNAVAILABLE),
    (RedisTimeoutError, grpc.StatusCode.UNAVAILABLE),
)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def status_of(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code that means what the library's `error` means; `None` for unexpected errors."""
    return next((code for error_type, code in _STATUS_OF if isinstance(error, error_type)), None)


@contextlib.asynccontextmanager
async def statuses(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Turn the library's errors into the status codes that mean the same (for every service of the server)."""
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as e:
        if (code := status_of(e)) is not None:
            redis_down = isinstance(e, RedisConnectionError | RedisTimeoutError)
            await _abort(context, code, f"Redis is unavailable ({e}); retry later" if redis_down else str(e))
        raise


@dataclass(kw_only=True)
class _MalformedLog:
    """One warning a minute at most about malformed requests, however many arrive: a flood cannot fill the log."""

    interval: float = 60.0
    _quiet_until: float = float("-inf")
    _held_back: int = 0

    def note(self, method: str, peer: str) -> None:
        now = time.monotonic()
        if now < self._quiet_until:
            self._held_back += 1
            return
        logger.warning(
            "refused a malformed request to %s from %s (%d more malformed requests since the last warning)",
            method,
            peer,
            self._held_back,
        )
        self._quiet_until = now + self.interval
        self._held_back = 0


@dataclass(kw_only=True)
class AgentStreamServicer(pb_grpc.AgentStreamServiceServicer):
    """Serves hosted agents to authenticated callers; every session is under its caller's scope and user."""

    runtime: Runtime
    """Whose Redis client, reader, writes and leases every call uses."""
    agents: Mapping[str, AbstractAgent[Any, Any]]
    authenticator: Authenticator
    model_settings: frozenset[str] = DEFAULT_MODEL_SETTINGS
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    """Largest prompt accepted, in bytes as stored in `begin` (UTF-8 JSON, control characters escaped)."""
    heartbeat_interval: float = 15.0
    """Seconds of silence on a Listen stream before a heartbeat is sent."""
    accepting: bool = True
    """False once shutdown began: new runs get UNAVAILABLE."""
    responses: ListenResponseCache = field(default_factory=ListenResponseCache)
    _malformed_log: _MalformedLog = field(default_factory=_MalformedLog)

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RunResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            # Runs of the agents live workers host are accepted too (an API-only server hosts none itself).
            workers = await fleet_agents(self.runtime) if request.agent not in self.agents else frozenset()
            session = self.admit(
                caller, agent=request.agent, prompt=request.prompt, session_id=request.session_id, also=workers
            )
            if (if_busy := _BUSY_POLICIES.get(request.if_busy)) is None:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown if_busy policy {request.if_busy}")
            options = await self._model_settings(request, context)
            traceparent = self.traceparent(context)
            try:
                run = await session.submit(
                    agent=request.agent,
                    body={"user_prompt": request.prompt},
                    options=options,
                    run_id=request.run_id or None,
                    if_busy=if_busy,
                    traceparent=traceparent,
                )
            except RunExistsError as e:
                # A retried Run (same run id) gets the run it already started, queued, live or ended; nothing
                # runs again.
                return pb.RunResponse(session_id=request.session_id, run_id=e.run_id, begin_event_id=e.begin_event_id)
            return pb.RunResponse(
                session_id=request.session_id,
                run_id=run.run_id,
                begin_event_id=run.begin_event_id,
                waiting=run.waiting,
            )

    async def Listen(
        self, request: pb.ListenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ListenResponse]:
        async with statuses(context):
            caller = await self._caller(request, context)
            if request.wait_seconds > 3600 or request.timeout_seconds > 86400:
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "wait_seconds <= 3600, timeout_seconds <= 86400"
                )
            session = self._session(caller, request.session_id)
            await self.run_of_allowed_agent(caller, session)
            key = session.keys.stream
            entries = session.listen_entries(
                wait=request.wait_seconds or 3,
                timeout=request.timeout_seconds or None,
                after=request.after_event_id or None,
                heartbeat=self.heartbeat_interval,
            )
            async for entry in entries:
                if entry is not None and entry.type == BEGIN and caller.agents is not None:
                    self.check_run_agent(caller, entry)  # a run that started after the check above
                yield _HEARTBEAT if entry is None else self.responses.response(key, entry)

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.CancelResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            session = self._session(caller, request.session_id)
            # A caller limited to some agents: the session's run must be of one of them, and only that run
            # is cancelled (not one started since).
            allowed = await self.run_of_allowed_agent(caller, session)
            return pb.CancelResponse(cancelled=await session.cancel(run_id=request.run_id or allowed))

    async def ListActive(
        self, request: pb.ListActiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListActiveResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            live = await live_sessions(self.runtime, scope_id=caller.scope_id, user_id=caller.user_id)
            if caller.agents is not None:  # only the runs of agents it may run
                allowed = await asyncio.gather(
                    *(self._allowed_run(caller, self._session(caller, run.session_id)) for run in live)
                )
                live = [run for run, ok in zip(live, allowed, strict=True) if ok == run.run_id]
            return pb.ListActiveResponse(
                sessions=[
                    pb.ActiveSession(
                        session_id=run.session_id,
                        run_id=run.run_id,
                        state=pb.RUN_STATE_QUEUED if run.queued else pb.RUN_STATE_RUNNING,
                        attempt=0 if run.queued else run.attempt,
                    )
                    for run in live
                ]
            )

    def check_agent(self, caller: Caller, name: str, *, also: frozenset[str] = frozenset()) -> None:
        """Raise `UnknownAgentError` unless the server hosts agent `name` (or `also` names it: the agents of
        the live workers), `AgentNotAllowedError` unless `caller` may run it."""
        if name not in self.agents and name not in also:
            hosted = ", ".join(sorted(agent for agent in {*self.agents, *also} if caller.may_run(agent))) or "none"
            raise UnknownAgentError(f"unknown agent {excerpt(name)}; hosted: {hosted}")
        if not caller.may_run(name):
            raise AgentNotAllowedError(f"you may not run agent {name!r}")

    async def run_of_allowed_agent(self, caller: Caller, session: SessionHandle) -> str | None:
        """For a caller limited to some agents: the id of the session's current run, `AgentNotAllowedError`
        unless its `begin` names one of them (`None`: no run, or a caller that may run every agent)."""
        if caller.agents is None:
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

    def check_run_agent(self, caller: Caller, begin: Entry) -> str:
        """The run id of `begin`; `AgentNotAllowedError` unless `caller` may run its agent (a `begin` that
        names none is no agent a limited caller may run)."""
        agent = begin.body.get("agent") if begin.type == BEGIN else None
        run_id = begin.body.get("run_id")
        if not isinstance(agent, str) or not isinstance(run_id, str) or not caller.may_run(agent):
            named = f"agent {excerpt(agent)}" if isinstance(agent, str) else "an agent it does not name"
            raise AgentNotAllowedError(f"the session's run is of {named}, which you may not run")
        return run_id

    async def _allowed_run(self, caller: Caller, session: SessionHandle) -> str | None:
        """`run_of_allowed_agent`, `None` where it is not allowed."""
        try:
            return await self.run_of_allowed_agent(caller, session)
        except AgentNotAllowedError:
            return None

    def admit(
        self, caller: Caller, *, agent: str, prompt: str, session_id: str, also: frozenset[str] = frozenset()
    ) -> SessionHandle:
        """Check that `caller` may start a run of `agent` (hosted here, or named by `also`) with `prompt` on its
        session `session_id` now, and return that session to submit the run to: the checks every edge (`Run`,
        A2A) makes, in order."""
        self.check_agent(caller, agent, also=also)
        if not prompt.strip():
            raise InvalidRequestError("prompt must not be empty")
        # Measured as stored: JSON escapes a control character to six bytes.
        if (stored := len(json.dumps(prompt, ensure_ascii=False).encode())) > self.max_prompt_bytes:
            raise InvalidRequestError(
                f"prompt is {stored} bytes as stored (UTF-8 JSON); the limit is {self.max_prompt_bytes}"
            )
        if not self.accepting:
            raise ShuttingDownError("server is shutting down; retry on another replica")
        return self._session(caller, session_id)

    def traceparent(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The caller's trace (its W3C `traceparent` metadata) a run it starts continues; `None` without telemetry."""
        telemetry = self.runtime.telemetry
        return telemetry.traceparent(context.invocation_metadata()) if telemetry is not None else None

    @property
    def redis(self) -> AsyncRedis:
        """The Redis client of the runtime."""
        return self.runtime.redis

    def stop_accepting(self) -> None:
        """Refuse new runs from now on (UNAVAILABLE): the server is shutting down."""
        self.accepting = False

    async def refuse_malformed(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], *, authenticate: bool = True
    ) -> NoReturn:
        """Answer a request whose bytes do not parse: INVALID_ARGUMENT (UNAUTHENTICATED first without
        credentials, when `authenticate`); logged once a minute at most."""
        async with statuses(context):
            if authenticate:
                await self.authenticate(context)
            self._malformed_log.note(method, context.peer())
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"request to {method} does not parse (malformed protobuf)"
            )

    async def _caller(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        caller = await self.authenticate(context)
        if len(UnknownFieldSet(request)):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request has fields this server does not know")
        return caller

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The caller behind the call's `authorization` metadata; `AuthError` (UNAUTHENTICATED) if none."""
        values = [value for key, value in context.invocation_metadata() or () if key == "authorization"]
        return await self.authenticate_values([value if isinstance(value, str) else "" for value in values])

    async def authenticate_values(self, values: Sequence[str]) -> Caller:
        """The caller behind a call's `authorization` values (gRPC metadata entries or HTTP headers)."""
        if len(values) > 1:  # proxies and clients disagree on which one counts: accept none
            raise AuthError("more than one 'authorization' metadata entry")
        return await self.authenticator.authenticate(values[0] if values else None)

    def _session(self, caller: Caller, session_id: str) -> SessionHandle:
        """The caller's session (the ids checked: INVALID_ARGUMENT before anything else happens)."""
        return SessionHandle.of(self.runtime, scope_id=caller.scope_id, user_id=caller.user_id, session_id=session_id)

    async def _model_settings(
        self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> dict[str, Any]:
        if not request.HasField("model_settings"):
            return {}
        try:
            settings = json_format.MessageToDict(request.model_settings)
        except ValueError:  # NaN or infinity: no JSON number carries them
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "model_settings numbers must be finite")
        if unknown := sorted(set(settings) - self.model_settings):
            allowed = ", ".join(sorted(self.model_settings))
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model setting {excerpt(unknown[0])} not allowed ({len(unknown)} unknown); allowed: {allowed}",
            )
        return {"model_settings": settings}
