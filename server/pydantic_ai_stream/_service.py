"""The gRPC service: translates `AgentStreamService` calls onto the library, and status codes back.

It holds no runtime logic of its own: `start_run` runs, a `SessionHandle` listens, cancels and lists;
this module authenticates, validates requests, converts events to protos and maps errors to codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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

from ._auth import Authenticator, AuthError, Caller
from ._deps import Deps
from ._errors import (
    AgxCanceledError,
    CursorAheadError,
    CursorExpiredError,
    InvalidIdError,
    ListenTimeoutError,
    RunExistsError,
    SessionBusyError,
    StreamNotFoundError,
)
from ._handle import SessionHandle, live_sessions
from ._keys import excerpt
from ._names import BEGIN, END, ERROR, EVENT, INFO
from ._redis import AsyncRedis, Entry
from ._run import start_run
from ._runtime import Runtime
from ._session import RedisSession
from .v1 import stream_pb2 as pb
from .v1 import stream_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_MAX_PROMPT_BYTES", "AgentStreamServicer", "ListenResponseCache", "ServiceDeps", "event_to_proto"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SETTINGS = frozenset(
    {"temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty"}
)
"""Model settings a `Run` may pass unless the server is told otherwise."""

DEFAULT_MAX_PROMPT_BYTES = 3_670_016
"""3.5 MiB: a `begin` carrying the prompt stays within a default gRPC client's 4 MiB receive limit."""


@dataclass(kw_only=True)
class ServiceDeps(Deps):
    """The deps of runs started through the service: the scope comes from the caller."""

    scope_id: int

    def get_scope_id(self) -> int:
        return self.scope_id


_EVENT_TYPES = {BEGIN: pb.EVENT_TYPE_BEGIN, EVENT: pb.EVENT_TYPE_EVENT, ERROR: pb.EVENT_TYPE_ERROR,
                INFO: pb.EVENT_TYPE_INFO, END: pb.EVENT_TYPE_END}  # fmt: skip
_EVENT_KINDS = {"llm-begin": pb.EVENT_KIND_LLM_BEGIN, "llm-end": pb.EVENT_KIND_LLM_END,
                "part_start": pb.EVENT_KIND_PART_START, "part_delta": pb.EVENT_KIND_PART_DELTA,
                "answer": pb.EVENT_KIND_ANSWER}  # fmt: skip
_PART_KINDS = {"text": pb.PART_KIND_TEXT, "thinking": pb.PART_KIND_THINKING, "tool-call": pb.PART_KIND_TOOL_CALL,
               "tool-return": pb.PART_KIND_TOOL_RETURN}  # fmt: skip
_OUTCOMES = {"failed": pb.TOOL_OUTCOME_FAILED, "denied": pb.TOOL_OUTCOME_DENIED,
             "interrupted": pb.TOOL_OUTCOME_INTERRUPTED, "retried": pb.TOOL_OUTCOME_RETRIED}  # fmt: skip
_HEARTBEAT = pb.ListenResponse(heartbeat=pb.Heartbeat())


def event_to_proto(entry: Entry) -> pb.Event:
    """A stream entry as a typed `Event`; the body is also kept as its JSON."""
    body = entry.body
    message = pb.Event(
        id=entry.id,
        type=_EVENT_TYPES.get(entry.type, pb.EVENT_TYPE_CUSTOM),
        type_name=entry.type,
        origin=entry.origin,
        body_json=entry.body_json,
    )
    if entry.type != EVENT or not isinstance(body, dict):
        return message
    # Application code may write `event` entries too: a field of an unexpected type is left to `body_json`.
    if (idx := _uint32(body, "idx")) is not None:
        message.idx = idx
    message.kind = _EVENT_KINDS.get(_str(body, "event") or "", pb.EVENT_KIND_UNSPECIFIED)
    if (event_idx := _uint32(body, "event_idx")) is not None:
        message.event_idx = event_idx
    if part_kind := _str(body, "part_kind"):
        message.part_kind = _PART_KINDS.get(part_kind, pb.PART_KIND_OTHER)
        message.part_kind_name = part_kind
    if delta_kind := _str(body, "part_delta_kind"):
        message.part_delta_kind = _PART_KINDS.get(delta_kind, pb.PART_KIND_OTHER)
    if outcome := _str(body, "outcome"):
        message.outcome = _OUTCOMES.get(outcome, pb.TOOL_OUTCOME_OTHER)
    if "content" in body:
        content = body["content"]
        message.content = content if isinstance(content, str) else json.dumps(content)
    for name in ("content_delta", "tool_name", "tool_call_id"):
        if (value := _str(body, name)) is not None:
            setattr(message, name, value)
    if isinstance(body.get("args"), dict):
        message.args.update(body["args"])
    return message


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _uint32(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32 else None


@dataclass(kw_only=True)
class ListenResponseCache:
    """The `ListenResponse` of recent entries, so the listeners of one session share one conversion.

    Bounded in bytes, not entries: an entry of more than an eighth of the budget is converted for
    each listener instead of being kept.
    """

    max_bytes: int = 16 << 20
    _responses: dict[tuple[str, str], tuple[pb.ListenResponse, int]] = field(default_factory=dict)
    _bytes: int = 0

    def response(self, key: str, entry: Entry) -> pb.ListenResponse:
        """The response carrying `entry` of stream `key`, converted once while it is cached."""
        cached = self._responses.get((key, entry.id))
        if cached is not None:
            return cached[0]
        response = pb.ListenResponse(event=event_to_proto(entry))
        size = len(entry.body_json) * 2 + 256  # the JSON, plus its typed fields and the message itself
        if size <= self.max_bytes // 8:
            while self._responses and self._bytes + size > self.max_bytes:
                _, evicted = self._responses.pop(next(iter(self._responses)))  # the oldest
                self._bytes -= evicted
            self._responses[(key, entry.id)] = (response, size)
            self._bytes += size
        return response

    @property
    def size_bytes(self) -> int:
        """Bytes the cached responses hold, about."""
        return self._bytes


_STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (InvalidIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (SessionBusyError, grpc.StatusCode.ALREADY_EXISTS),
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


@contextlib.asynccontextmanager
async def _statuses(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Turn the library's errors into the status codes that mean the same."""
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as e:
        for error_type, code in _STATUS_OF:
            if isinstance(e, error_type):
                details = f"Redis is unavailable ({e}); retry later" if code is grpc.StatusCode.UNAVAILABLE else str(e)
                await _abort(context, code, details)
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
    runs: set[asyncio.Task[None]] = field(default_factory=set)
    responses: ListenResponseCache = field(default_factory=ListenResponseCache)
    _malformed_log: _MalformedLog = field(default_factory=_MalformedLog)

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RunResponse:
        async with _statuses(context):
            caller = await self._caller(request, context)
            agent = self.agents.get(request.agent)
            if agent is None:
                hosted = ", ".join(sorted(name for name in self.agents if caller.may_run(name))) or "none"
                details = f"unknown agent {excerpt(request.agent)}; hosted: {hosted}"
                await _abort(context, grpc.StatusCode.NOT_FOUND, details)
            if not caller.may_run(request.agent):
                await _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"you may not run agent {request.agent!r}")
            if not request.prompt.strip():
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty")
            # Measured as stored: JSON escapes a control character to six bytes.
            if (stored := len(json.dumps(request.prompt, ensure_ascii=False).encode())) > self.max_prompt_bytes:
                details = f"prompt is {stored} bytes as stored (UTF-8 JSON); the limit is {self.max_prompt_bytes}"
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, details)
            if not self.accepting:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another replica")
            deps = self._deps(caller, request.session_id, run_id=request.run_id or None)
            settings = await self._model_settings(request, context)
            session = RedisSession(
                redis=self.redis,
                runtime=self.runtime,
                scope_id=caller.scope_id,
                user_id=caller.user_id,
                session_id=request.session_id,
            )
            try:
                task = await start_run(session, agent, request.prompt, deps, **settings)
            except RunExistsError as e:
                # A retried Run (same run id) gets the run it already started, live or ended; nothing runs again.
                return pb.RunResponse(session_id=request.session_id, run_id=e.run_id, begin_event_id=e.begin_event_id)
            self.runs.add(task)
            task.add_done_callback(self._run_done)
            return pb.RunResponse(
                session_id=request.session_id, run_id=deps.run_id or "", begin_event_id=deps.begin_event_id or ""
            )

    async def Listen(
        self, request: pb.ListenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.ListenResponse]:
        async with _statuses(context):
            caller = await self._caller(request, context)
            if request.wait_seconds > 3600 or request.timeout_seconds > 86400:
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "wait_seconds <= 3600, timeout_seconds <= 86400"
                )
            session = self._session(caller, request.session_id)
            key = session.keys.stream
            entries = session.listen_entries(
                wait=request.wait_seconds or 3,
                timeout=request.timeout_seconds or None,
                after=request.after_event_id or None,
                heartbeat=self.heartbeat_interval,
            )
            async for entry in entries:
                yield _HEARTBEAT if entry is None else self.responses.response(key, entry)

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.CancelResponse:
        async with _statuses(context):
            caller = await self._caller(request, context)
            return pb.CancelResponse(cancelled=await self._session(caller, request.session_id).cancel())

    async def ListActive(
        self, request: pb.ListActiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListActiveResponse:
        async with _statuses(context):
            caller = await self._caller(request, context)
            live = await live_sessions(self.runtime, scope_id=caller.scope_id, user_id=caller.user_id)
            return pb.ListActiveResponse(sessions=[pb.ActiveSession(session_id=s) for s in live])

    @property
    def redis(self) -> AsyncRedis:
        """The Redis client of the runtime."""
        return self.runtime.redis

    async def drain(self, grace: float) -> None:
        """Refuse new runs, give running ones `grace` seconds, then cancel them (listeners get `error` + `end`)."""
        self.accepting = False
        if self.runs:
            _, pending = await asyncio.wait(self.runs, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def refuse_malformed(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], *, authenticate: bool = True
    ) -> NoReturn:
        """Answer a request whose bytes do not parse: INVALID_ARGUMENT (UNAUTHENTICATED first without
        credentials, when `authenticate`); logged once a minute at most."""
        async with _statuses(context):
            if authenticate:
                await self._authenticate(context)
            self._malformed_log.note(method, context.peer())
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"request to {method} does not parse (malformed protobuf)"
            )

    async def _caller(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        caller = await self._authenticate(context)
        if len(UnknownFieldSet(request)):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request has fields this server does not know")
        return caller

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        values = [value for key, value in context.invocation_metadata() or () if key == "authorization"]
        if len(values) > 1:  # proxies and clients disagree on which one counts: accept none
            raise AuthError("more than one 'authorization' metadata entry")
        authorization = values[0] if values and isinstance(values[0], str) else None
        return await self.authenticator.authenticate(authorization)

    def _session(self, caller: Caller, session_id: str) -> SessionHandle:
        """The caller's session (the ids checked: INVALID_ARGUMENT before anything else happens)."""
        return SessionHandle.of(self.runtime, scope_id=caller.scope_id, user_id=caller.user_id, session_id=session_id)

    def _deps(self, caller: Caller, session_id: str, run_id: str | None) -> ServiceDeps:
        deps = ServiceDeps(
            redis=self.redis,
            runtime=self.runtime,
            scope_id=caller.scope_id,
            user_id=caller.user_id,
            session_id=session_id,
            run_id=run_id,
        )
        deps.keys()  # validates the ids: INVALID_ARGUMENT before anything else happens
        return deps

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

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self.runs.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, AgxCanceledError):
            logger.error("run failed", exc_info=error)
