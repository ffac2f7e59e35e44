"""The gRPC service: translates `AgentStreamService` calls onto the library, and status codes back.

It holds no runtime logic of its own: `start_run`, `Deps.listen`, `Deps.cancel` and `q` do the work;
this module authenticates, validates requests, converts events to protos and maps errors to codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from pydantic_ai.agent import AbstractAgent
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .auth import Authenticator, AuthError, Caller
from .deps import Deps
from .errors import AgxCanceledError, CursorExpiredError, InvalidIdError, RunExistsError, SessionBusyError
from .runner import q, start_run
from .session import RedisSession
from .store import AsyncRedis, Entry
from .v1 import stream_pb2 as pb
from .v1 import stream_pb2_grpc as pb_grpc

__all__ = ["AgentStreamServicer", "ServiceDeps", "event_to_proto"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SETTINGS = frozenset(
    {"temperature", "max_tokens", "top_p", "seed", "presence_penalty", "frequency_penalty"}
)
"""Model settings a `Run` may pass unless the server is told otherwise."""


@dataclass(kw_only=True)
class ServiceDeps(Deps):
    """The deps of runs started through the service: the scope comes from the caller."""

    scope_id: int

    def get_scope_id(self) -> int:
        return self.scope_id


_EVENT_TYPES = {"begin": pb.EVENT_TYPE_BEGIN, "event": pb.EVENT_TYPE_EVENT, "error": pb.EVENT_TYPE_ERROR,
                "info": pb.EVENT_TYPE_INFO, "end": pb.EVENT_TYPE_END}  # fmt: skip
_EVENT_KINDS = {"llm-begin": pb.EVENT_KIND_LLM_BEGIN, "llm-end": pb.EVENT_KIND_LLM_END,
                "part_start": pb.EVENT_KIND_PART_START, "part_delta": pb.EVENT_KIND_PART_DELTA,
                "answer": pb.EVENT_KIND_ANSWER}  # fmt: skip
_PART_KINDS = {"text": pb.PART_KIND_TEXT, "thinking": pb.PART_KIND_THINKING, "tool-call": pb.PART_KIND_TOOL_CALL,
               "tool-return": pb.PART_KIND_TOOL_RETURN}  # fmt: skip
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
    if entry.type != "event":
        return message
    if isinstance(body.get("idx"), int):
        message.idx = body["idx"]
    message.kind = _EVENT_KINDS.get(body.get("event", ""), pb.EVENT_KIND_UNSPECIFIED)
    if isinstance(body.get("event_idx"), int):
        message.event_idx = body["event_idx"]
    if part_kind := body.get("part_kind"):
        message.part_kind = _PART_KINDS.get(part_kind, pb.PART_KIND_OTHER)
        message.part_kind_name = part_kind
    if "content" in body:
        content = body["content"]
        message.content = content if isinstance(content, str) else json.dumps(content)
    for name in ("content_delta", "tool_name", "tool_call_id"):
        if isinstance(body.get(name), str):
            setattr(message, name, body[name])
    if isinstance(body.get("args"), dict):
        message.args.update(body["args"])
    return message


class _ResponseCache:
    """The `ListenResponse` of recent entries, so the listeners of one session share one conversion."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._responses: dict[tuple[str, str], pb.ListenResponse] = {}

    def response(self, key: str, entry: Entry) -> pb.ListenResponse:
        response = self._responses.get((key, entry.id))
        if response is None:
            if len(self._responses) >= self._size:
                del self._responses[next(iter(self._responses))]  # the oldest
            response = self._responses[(key, entry.id)] = pb.ListenResponse(event=event_to_proto(entry))
        return response


_STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (InvalidIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (SessionBusyError, grpc.StatusCode.ALREADY_EXISTS),
    (CursorExpiredError, grpc.StatusCode.OUT_OF_RANGE),
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
class AgentStreamServicer(pb_grpc.AgentStreamServiceServicer):
    """Serves hosted agents to authenticated callers; every session is under its caller's scope and user."""

    redis: AsyncRedis
    agents: Mapping[str, AbstractAgent[Any, Any]]
    authenticator: Authenticator
    model_settings: frozenset[str] = DEFAULT_MODEL_SETTINGS
    heartbeat_interval: float = 15.0
    """Seconds of silence on a Listen stream before a heartbeat is sent."""
    accepting: bool = True
    """False once shutdown began: new runs get UNAVAILABLE."""
    runs: set[asyncio.Task[None]] = field(default_factory=set)
    _responses: _ResponseCache = field(default_factory=_ResponseCache)

    async def Run(self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.RunResponse:
        async with _statuses(context):
            caller = await self._caller(request, context)
            agent = self.agents.get(request.agent)
            if agent is None:
                hosted = ", ".join(sorted(self.agents)) or "none"
                await _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown agent {request.agent!r}; hosted: {hosted}")
            if not caller.may_run(request.agent):
                await _abort(context, grpc.StatusCode.PERMISSION_DENIED, f"you may not run agent {request.agent!r}")
            if not request.prompt.strip():
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty")
            if not self.accepting:
                await _abort(context, grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another replica")
            deps = self._deps(caller, request.session_id, run_id=request.run_id or None)
            settings = await self._model_settings(request, context)
            session = RedisSession(
                redis=self.redis, scope_id=caller.scope_id, user_id=caller.user_id, session_id=request.session_id
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
            deps = self._deps(caller, request.session_id)
            key = deps.key()
            entries = deps.listen_entries(
                wait=request.wait_seconds or 3,
                timeout=request.timeout_seconds or 60,
                after=request.after_event_id or None,
                heartbeat=self.heartbeat_interval,
            )
            sent = 0
            async for entry in entries:
                if entry is None:
                    yield _HEARTBEAT
                    continue
                yield self._responses.response(key, entry)
                sent += 1
            if sent == 0 and not request.after_event_id:
                await _abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"session {request.session_id!r} has no events (it never ran, or they expired)",
                )

    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.CancelResponse:
        async with _statuses(context):
            caller = await self._caller(request, context)
            return pb.CancelResponse(cancelled=await self._deps(caller, request.session_id).cancel())

    async def ListActive(
        self, request: pb.ListActiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListActiveResponse:
        async with _statuses(context):
            caller = await self._caller(request, context)
            sessions = [
                pb.ActiveSession(session_id=s) async for _, _, s in q(self.redis, caller.scope_id, caller.user_id)
            ]
            return pb.ListActiveResponse(sessions=sessions)

    async def drain(self, grace: float) -> None:
        """Refuse new runs, give running ones `grace` seconds, then cancel them (listeners get `error` + `end`)."""
        self.accepting = False
        if self.runs:
            _, pending = await asyncio.wait(self.runs, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _caller(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        caller = await self.authenticator.authenticate(authorization if isinstance(authorization, str) else None)
        if len(UnknownFieldSet(request)):
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request has fields this server does not know")
        return caller

    def _deps(self, caller: Caller, session_id: str, run_id: str | None = None) -> ServiceDeps:
        deps = ServiceDeps(
            redis=self.redis, scope_id=caller.scope_id, user_id=caller.user_id, session_id=session_id, run_id=run_id
        )
        deps.keys()  # validates the ids: INVALID_ARGUMENT before anything else happens
        return deps

    async def _model_settings(
        self, request: pb.RunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> dict[str, Any]:
        if not request.HasField("model_settings"):
            return {}
        settings = json_format.MessageToDict(request.model_settings)
        if unknown := sorted(set(settings) - self.model_settings):
            allowed = ", ".join(sorted(self.model_settings))
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"model settings {unknown} not allowed; allowed: {allowed}"
            )
        return {"model_settings": settings}

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self.runs.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, AgxCanceledError):
            logger.error("run failed", exc_info=error)
