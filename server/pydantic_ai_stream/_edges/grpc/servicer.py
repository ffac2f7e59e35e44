"""The gRPC service: translates `AgentStreamService` calls onto the library, and status codes back.

It holds no runtime logic of its own: admission (`Admission`) authenticates callers, checks their runs and
submits them, a `SessionHandle` listens, cancels and lists; this module reads credentials and requests, sends
events (converted by `_proto`) and maps errors to codes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from pydantic_ai.agent import AbstractAgent
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._core import errors
from ..._core.entry import Entry
from ..._core.inputs import InputBounds
from ..._core.keys import excerpt
from ..._core.names import BEGIN
from ..._core.submission import BusyPolicy
from ..._durable.fleet import fleet_agents
from ..._read.handle import live_sessions
from ..._runtime.admission import Admission
from ..._runtime.auth import Authenticator, AuthError, Caller
from ..._runtime.inputs import context_adapter
from ..._runtime.runtime import Runtime
from ..._store.redis import AsyncRedis
from ..._store.results import ActiveRun
from ...v1 import stream_pb2 as pb
from ...v1 import stream_pb2_grpc as pb_grpc
from .inputs import request_attachments, request_context, tool_answer
from .proto import HEARTBEAT, ListenResponseCache, batch_response

__all__ = ["DEFAULT_MAX_PROMPT_BYTES", "AgentStreamServicer", "MalformedRequest", "status_of", "statuses"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SETTINGS = frozenset(
    {"temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty"}
)
"""Model settings a `Run` may pass unless the server is told otherwise."""

DEFAULT_MAX_PROMPT_BYTES = 3_670_016
"""3.5 MiB: a `begin` carrying the prompt stays within a default gRPC client's 4 MiB receive limit."""


MAX_BATCH_BYTES = 1 << 20
"""Most event bytes one batched `ListenResponse` carries (a larger event goes alone): far below a client's
default 4 MiB receive limit."""
_BUSY_POLICIES: dict[int, BusyPolicy] = {
    pb.BUSY_POLICY_UNSPECIFIED: "reject",
    pb.BUSY_POLICY_REJECT: "reject",
    pb.BUSY_POLICY_INTERRUPT: "interrupt",
    pb.BUSY_POLICY_ROLLBACK: "rollback",
    pb.BUSY_POLICY_ENQUEUE: "enqueue",
}


_STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.UnknownAgentError, grpc.StatusCode.NOT_FOUND),
    (errors.AgentNotAllowedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.InvalidIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (errors.SessionBusyError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.RunNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.NotWaitingError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.CursorExpiredError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.CursorAheadError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.StreamNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.ListenTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (RedisConnectionError, grpc.StatusCode.UNAVAILABLE),
    (RedisTimeoutError, grpc.StatusCode.UNAVAILABLE),
)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _run_state(run: ActiveRun) -> pb.RunState.ValueType:
    if run.waiting:
        return pb.RUN_STATE_WAITING_FOR_INPUT
    return pb.RUN_STATE_QUEUED if run.queued else pb.RUN_STATE_RUNNING


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


@dataclass(kw_only=True, slots=True)
class _Responses:
    """One Listen's responses: an event each, or, if it asked for up to `most` > 1 events a response, the
    events that arrived together in as few responses as that and `MAX_BATCH_BYTES` allow."""

    cache: ListenResponseCache
    key: str
    most: int

    def of(self, batch: list[Entry]) -> list[bytes]:
        if len(batch) == 1:  # a live run's listener, keeping up: one entry a read
            return [self.cache.serialized(self.key, batch[0])]
        items = [self.cache.serialized(self.key, entry) for entry in batch]
        if self.most < 2 or len(items) < 2:
            return items
        responses: list[bytes] = []
        start, size = 0, 0
        for end, item in enumerate(items):
            if end > start and (end - start == self.most or size + len(item) > MAX_BATCH_BYTES):
                responses.append(_one_or_batch(items[start:end]))
                start, size = end, 0
            size += len(item)
        responses.append(_one_or_batch(items[start:]))
        return responses


def _one_or_batch(items: list[bytes]) -> bytes:
    return items[0] if len(items) == 1 else batch_response(items)


@dataclass(frozen=True, kw_only=True, slots=True)
class MalformedRequest:
    """What a request to `method` whose bytes do not parse deserializes to on `running_server`'s server, so the
    method's handler refuses it properly (`AgentStreamServicer.refuse_malformed`)."""

    method: str


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
    input_bounds: InputBounds = field(default_factory=InputBounds)
    """How large a run's context and attachments may be."""
    heartbeat_interval: float = 15.0
    """Seconds of silence on a Listen stream before a heartbeat is sent."""
    responses: ListenResponseCache = field(default_factory=ListenResponseCache)
    sends_bytes: bool = False
    """Listen yields serialized responses: the server sends them as they are (`running_server` sets it). Else it
    yields `ListenResponse`s, for the generated `add_AgentStreamServiceServicer_to_server` of any server."""
    admission: Admission = field(init=False)
    """The checks and the submit of a run, which A2A shares."""
    _malformed_log: _MalformedLog = field(default_factory=_MalformedLog)

    def __post_init__(self) -> None:
        self.admission = Admission(
            runtime=self.runtime,
            agents=self.agents,
            authenticator=self.authenticator,
            max_prompt_bytes=self.max_prompt_bytes,
            bounds=self.input_bounds,
            contexts={name: adapter for name, agent in self.agents.items() if (adapter := context_adapter(agent))},
            # Runs of the agents live workers host are accepted too (an API-only server hosts none itself).
            fleet=lambda: fleet_agents(self.runtime),
        )

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RunResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            admission = self.admission
            session = await admission.admit(
                caller, agent=request.agent, prompt=request.prompt, session_id=request.session_id, anywhere=True
            )
            if (if_busy := _BUSY_POLICIES.get(request.if_busy)) is None:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown if_busy policy {request.if_busy}")
            options = await self._model_settings(request, context)
            run_context, attachments = admission.check_inputs(
                agent=request.agent, context=request_context(request), attachments=request_attachments(request)
            )
            traceparent = self.traceparent(context)
            try:
                run = await admission.submit(
                    session,
                    agent=request.agent,
                    prompt=request.prompt,
                    options=options,
                    run_id=request.run_id or None,
                    if_busy=if_busy,
                    traceparent=traceparent,
                    context=run_context,
                    attachments=attachments,
                )
            except errors.RunExistsError as e:
                # A retried Run (same run id) gets the run it already started, queued, live or ended; nothing
                # runs again.
                return pb.RunResponse(session_id=request.session_id, run_id=e.run_id, begin_event_id=e.begin_event_id)
            return pb.RunResponse(
                session_id=request.session_id,
                run_id=run.run_id,
                begin_event_id=run.begin_event_id,
                waiting=run.waiting,
            )

    async def Listen(  # type: ignore[override]  # serialized `ListenResponse`s
        self, request: pb.ListenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes | pb.ListenResponse]:
        """Responses go out as the bytes `ListenResponseCache` serialized once for all of a session's listeners
        (with `sends_bytes`: the server sends them as they are, see `grpc/server.py`)."""
        async with statuses(context):
            caller = await self._caller(request, context)
            if request.wait_seconds > 3600 or request.timeout_seconds > 86400:
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "wait_seconds <= 3600, timeout_seconds <= 86400"
                )
            session = self.admission.session(caller, request.session_id)
            await self.admission.run_of_allowed_agent(caller, session)
            batches = session.listen_batches(
                wait=request.wait_seconds or 3,
                timeout=request.timeout_seconds or None,
                after=request.after_event_id or None,
                heartbeat=self.heartbeat_interval,
            )
            responses = _Responses(cache=self.responses, key=session.keys.stream, most=request.max_batch_events)
            limited, as_is = caller.agents is not None, self.sends_bytes
            async for batch in batches:
                if batch is None:
                    yield HEARTBEAT if as_is else pb.ListenResponse.FromString(HEARTBEAT)
                    continue
                allowed = self._allowed(caller, batch) if limited else batch
                for response in responses.of(allowed):
                    yield response if as_is else pb.ListenResponse.FromString(response)
                if allowed is not batch:
                    self.admission.check_run_agent(caller, batch[len(allowed)])  # raises: not allowed

    def _allowed(self, caller: Caller, batch: list[Entry]) -> list[Entry]:
        """`batch` up to the `begin` of a run the caller (limited to some agents) may not see: one that started
        after the Listen's check."""
        for n, entry in enumerate(batch):
            if entry.type == BEGIN:
                try:
                    self.admission.check_run_agent(caller, entry)
                except errors.AgentNotAllowedError:
                    return batch[:n]
        return batch

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.CancelResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            session = self.admission.session(caller, request.session_id)
            # A caller limited to some agents: the session's run must be of one of them, and only that run
            # is cancelled (not one started since).
            allowed = await self.admission.run_of_allowed_agent(caller, session)
            return pb.CancelResponse(cancelled=await session.cancel(run_id=request.run_id or allowed))

    async def Respond(
        self, request: pb.RespondRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RespondResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            session = self.admission.session(caller, request.session_id)
            allowed = await self.admission.run_of_allowed_agent(caller, session)
            if allowed is not None and allowed != request.run_id:
                raise errors.RunNotFoundError(f"session {request.session_id!r} has no run {excerpt(request.run_id)}")
            answers = [tool_answer(answer) for answer in request.answers]
            responded = await session.respond(request.run_id, answers)
            return pb.RespondResponse(continued=responded.continued, pending_call_ids=responded.pending)

    async def ListActive(
        self, request: pb.ListActiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListActiveResponse:
        async with statuses(context):
            caller = await self._caller(request, context)
            live = await live_sessions(self.runtime, scope_id=caller.scope_id, user_id=caller.user_id)
            live = await self.admission.allowed_runs(caller, live)
            return pb.ListActiveResponse(
                sessions=[
                    pb.ActiveSession(
                        session_id=run.session_id,
                        run_id=run.run_id,
                        state=_run_state(run),
                        attempt=0 if run.queued or run.waiting else run.attempt,
                        agent=run.agent,
                        started_unix_ms=run.started_ms,
                    )
                    for run in live
                ]
            )

    def traceparent(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The caller's trace (its W3C `traceparent` metadata) a run it starts continues; `None` without telemetry."""
        telemetry = self.runtime.telemetry
        return telemetry.traceparent(context.invocation_metadata()) if telemetry is not None else None

    @property
    def redis(self) -> AsyncRedis:
        """The Redis client of the runtime."""
        return self.runtime.redis

    @property
    def accepting(self) -> bool:
        """False once shutdown began: new runs get UNAVAILABLE."""
        return self.admission.accepting

    def stop_accepting(self) -> None:
        """Refuse new runs from now on (UNAVAILABLE): the server is shutting down."""
        self.admission.stop_accepting()

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
        if isinstance(request, MalformedRequest):
            await self.refuse_malformed(request.method, context)
        caller = await self.authenticate(context)
        if len(UnknownFieldSet(request)):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request has fields this server does not know")
        return caller

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The caller behind the call's `authorization` metadata; `AuthError` (UNAUTHENTICATED) if none."""
        values = [value for key, value in context.invocation_metadata() or () if key == "authorization"]
        return await self.admission.authenticate([value if isinstance(value, str) else "" for value in values])

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
