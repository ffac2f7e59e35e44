"""The A2A protocol (`lf.a2a.v1.A2AService`, the `a2a` extra) on our runtime: the SDK's `GrpcHandler` serves it (and
its JSON-RPC and REST routes over HTTP, `a2a_routes`) and calls `A2ARequestHandler`, which admits runs as `Run`
does and reads tasks from our Redis streams.

A message starts a run (its `context_id` is our session, the task is the run); the run's stream entries become A2A
status updates and artifact chunks (`TaskFold`); cancel is our cancel; subscribing replays the stream from the run's
`begin` and follows it, from any replica. Tenant = agent name. Callers authenticate as on `AgentStreamService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import quote

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import GrpcHandler, RequestHandler
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks.task_store import TaskStore
from a2a.types import a2a_pb2 as a2a
from a2a.types import a2a_pb2_grpc as a2a_grpc
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_CURRENT, TransportProtocol
from a2a.utils.errors import (
    A2AError,
    ContentTypeNotSupportedError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.errors import InvalidRequestError as A2AInvalidRequestError
from a2a.utils.task import apply_history_length, validate_history_length
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..._core.entry import Entry
from ..._core.errors import CursorExpiredError, InvalidIdError, InvalidRequestError, UnknownAgentError
from ..._core.names import BEGIN, END, ERROR, EVENT, ORIGIN_STREAM
from ..._read.handle import SessionHandle
from ..._runtime.auth import AuthError, Caller
from ..._runtime.runtime import Runtime
from ..._store.redis import CancelState
from ..grpc_service import AgentStreamServicer, status_of, statuses
from .tasks import TaskRecord, TaskRecords, TaskState, now_ms

__all__ = [
    "A2A_HTTP_PREFIX",
    "A2A_SERVICE_NAME",
    "JSONRPC_PATH",
    "REST_PATH",
    "A2ARequestHandler",
    "RedisTaskStore",
    "TaskFold",
    "a2a_routes",
    "add_a2a",
]

A2A_SERVICE_NAME = a2a.DESCRIPTOR.services_by_name["A2AService"].full_name
A2A_HTTP_PREFIX = "/a2a"
"""Where A2A's HTTP routes live on the HTTP port (the agent cards' standard path aside)."""
JSONRPC_PATH = f"{A2A_HTTP_PREFIX}/jsonrpc"
"""A2A's JSON-RPC endpoint on the HTTP port (the request's `tenant` param names the agent)."""
REST_PATH = f"{A2A_HTTP_PREFIX}/rest"
"""A2A's REST (HTTP+JSON) routes on the HTTP port (`/<tenant>/...` names the agent)."""
ARTIFACT_ID = "answer"
"""The artifact that carries a task's text: the text parts of every node, in order (as `Transcript.text()`)."""

_STATES: dict[TaskState, a2a.TaskState] = {
    "": a2a.TASK_STATE_WORKING,
    "completed": a2a.TASK_STATE_COMPLETED,
    "failed": a2a.TASK_STATE_FAILED,
    "canceled": a2a.TASK_STATE_CANCELED,
}
_PAGE = 1000
_CALLER = "pydantic_ai_stream.caller"
"""Where a call context's state holds the authenticated caller and the tenant's agent."""
_HTTP_CALLER = "pydantic_ai_stream.http_caller"
"""Where an HTTP request's scope state (and so its call context's state) holds the caller `a2a_routes` let in."""
_MAX_ID_CHARS = 256
"""Longest `message_id` accepted: replies echo it."""
_CANCEL_WAIT = 10.0
"""Seconds `CancelTask` waits for the cancelled run's `end` before it answers with the task as it is."""


@dataclass(kw_only=True)
class TaskFold:
    """Folds one run's stream entries (after its `begin`) into A2A events for its task, in order.

    Text streams as chunks of one artifact (`append`). A `resumed` marker (a worker died, another goes on from
    node `idx`) drops the text of node `idx` and after; when that dropped text the client already has, the
    artifact is sent again whole (`append=False`, which replaces it): the client never shows text twice.
    """

    task_id: str
    context_id: str
    state: TaskState = ""
    working: bool = False
    """Whether the run started (a node began): the state is WORKING, else SUBMITTED."""
    error: str = ""
    ended: bool = False
    _text: dict[int, dict[int, str]] = field(default_factory=dict)
    """Node idx -> text part event_idx -> its content so far."""
    _sent: list[str] = field(default_factory=list)
    """The chunks of the artifact the client has, in order."""
    _opened: bool = False
    """Whether the client has the artifact (possibly empty): later chunks append to it."""

    def text(self) -> str:
        """The text parts' content, node after node."""
        return "".join(part for idx in sorted(self._text) for _, part in sorted(self._text[idx].items()))

    def entry(self, entry: Entry) -> list[Event]:
        """The A2A events for one entry; the last one after `end` is the final status."""
        events: list[Event] = []
        if entry.type == ERROR and entry.origin == ORIGIN_STREAM:
            message = str(entry.body.get("msg", ""))
            self.state, self.error = ("canceled", "") if message == "canceled" else ("failed", message)
        elif entry.type == END:
            self.ended = True
            self.state = self.state or "completed"
            if self._opened:
                events.append(self._chunk("", append=True, last=True))
            events.append(self._status())
        elif entry.type == EVENT:
            if not self.working:
                self.working = True
                events.append(self._status())
            events.extend(self._event(entry.body))
        return events

    def task(self) -> a2a.Task:
        """The task as folded so far: its state and its text as one artifact."""
        task = a2a.Task(id=self.task_id, context_id=self.context_id, status=self._task_status())
        if text := self.text():
            task.artifacts.append(_artifact(text))
        return task

    def shown(self) -> a2a.Task:
        """The task as folded so far, for a client that has nothing yet: later events continue from it."""
        text = self.text()
        self._sent, self._opened = ([text], True) if text else ([], False)
        return self.task()

    def _event(self, body: Mapping[str, Any]) -> list[Event]:
        kind, idx = body.get("event"), body.get("idx")
        if not isinstance(idx, int):
            return []
        if kind == "resumed":
            for superseded in [i for i in self._text if i >= idx]:
                del self._text[superseded]
            return self._resend()
        if body.get("part_kind") != "text" or not isinstance(event_idx := body.get("event_idx"), int):
            return []
        parts = self._text.setdefault(idx, {})
        if kind == "part_start":
            parts[event_idx] = str(body.get("content") or "")
            return self._resend()
        if kind == "part_delta" and event_idx in parts:
            delta = str(body.get("content_delta") or "")
            parts[event_idx] += delta
            if self._is_last(idx, event_idx):
                return [self._chunk(delta, append=self._opened)] if delta else []
            return self._resend()
        return []

    def _is_last(self, idx: int, event_idx: int) -> bool:
        last_node = max(self._text)
        return idx == last_node and event_idx == max(self._text[last_node])

    def _resend(self) -> list[Event]:
        """What the client needs to have the text: the new end appended, or the whole artifact again."""
        text, sent = self.text(), "".join(self._sent)
        if text == sent:
            return []
        if text.startswith(sent):
            return [self._chunk(text[len(sent) :], append=self._opened)]
        self._sent.clear()
        return [self._chunk(text, append=False)]

    def _chunk(self, text: str, *, append: bool, last: bool = False) -> a2a.TaskArtifactUpdateEvent:
        if not append:
            self._sent.clear()
        if text:
            self._sent.append(text)
        self._opened = True
        return a2a.TaskArtifactUpdateEvent(
            task_id=self.task_id, context_id=self.context_id, artifact=_artifact(text), append=append, last_chunk=last
        )

    def _task_status(self) -> a2a.TaskStatus:
        state = _STATES[self.state] if self.working or self.state else a2a.TASK_STATE_SUBMITTED
        status = a2a.TaskStatus(state=state)
        if self.error:
            status.message.CopyFrom(_agent_message(self.error, self.task_id, self.context_id))
        return status

    def status(self) -> a2a.TaskStatusUpdateEvent:
        """The task's current state as a status update (also sent again after a silence: a heartbeat)."""
        return self._status()

    def _status(self) -> a2a.TaskStatusUpdateEvent:
        return a2a.TaskStatusUpdateEvent(task_id=self.task_id, context_id=self.context_id, status=self._task_status())


def _artifact(text: str) -> a2a.Artifact:
    return a2a.Artifact(artifact_id=ARTIFACT_ID, name=ARTIFACT_ID, parts=[a2a.Part(text=text)])


def _agent_message(text: str, task_id: str, context_id: str) -> a2a.Message:
    return a2a.Message(
        message_id=uuid.uuid4().hex,
        task_id=task_id,
        context_id=context_id,
        role=a2a.ROLE_AGENT,
        parts=[a2a.Part(text=text)],
    )


@dataclass(kw_only=True)
class RedisTaskStore(TaskStore):
    """The SDK's task store on our Redis: a task is read from its record and its run's stream (runs write them;
    `save` is not how tasks are written here). The caller and agent are the call's (`A2ARequestHandler` puts them
    in the call context's state), so a caller only ever reads its own tasks of the tenant's agent."""

    runtime: Runtime

    async def get(self, task_id: str, context: ServerCallContext) -> a2a.Task | None:
        """The caller's task `task_id` as its run's stream has it so far, or `None`."""
        caller, agent = _call(context)
        try:
            record = await self.record(caller, agent, task_id)
        except TaskNotFoundError:
            return None
        return await self.snapshot(caller, record)

    async def list(self, params: a2a.ListTasksRequest, context: ServerCallContext) -> a2a.ListTasksResponse:
        """The caller's tasks of the tenant's agent, newest first (`context_id` and `status` filter the page)."""
        caller, agent = _call(context)
        page_size = min(params.page_size or 50, 100)
        offset = int(params.page_token) if params.page_token.isdigit() else 0
        records = self.records(caller)
        ids, total = await records.ids(offset=offset, limit=page_size)
        response = a2a.ListTasksResponse(page_size=page_size, total_size=total)
        for record in await records.get_many(ids):
            if record is None or record.agent != agent:
                continue
            if params.context_id and record.context_id != params.context_id:
                continue
            task = await self.snapshot(caller, record)
            if params.status and task.status.state != params.status:
                continue
            if not params.include_artifacts:
                del task.artifacts[:]
            response.tasks.append(task)
        if offset + page_size < total:
            response.next_page_token = str(offset + page_size)
        return response

    async def save(self, task: a2a.Task, context: ServerCallContext) -> None:
        """Not how tasks are written here: a run writes its stream, `A2ARequestHandler` its record."""
        raise UnsupportedOperationError("tasks are written by their runs")

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        """Forget the caller's task record (its run's stream expires on its own)."""
        caller, agent = _call(context)
        await self.record(caller, agent, task_id)
        await self.records(caller).delete(task_id)

    async def snapshot(self, caller: Caller, record: TaskRecord) -> a2a.Task:
        """The task as the stream has it now (or as its record has it, once the stream expired), with its
        history."""
        folded = await self.fold(caller, record)
        task = _ended_task(record) if folded is None else folded[0].task()
        task.history.extend(_history(record))
        return task

    async def fold(self, caller: Caller, record: TaskRecord) -> tuple[TaskFold, str] | None:
        """The run's entries so far, folded, and the id of the last one read; `None` for a task whose outcome
        is in its record (it ended, and its stream may be gone)."""
        if record.state:
            return None
        session = self.session(caller, record)
        fold = TaskFold(task_id=record.task_id, context_id=record.context_id)
        cursor = record.begin_event_id
        try:
            while not fold.ended and (page := await session.stream.read_range(after=cursor, count=_PAGE)):
                for entry in page:
                    fold.entry(entry)
                    cursor = entry.id
                    if fold.ended:
                        break
        except CursorExpiredError:
            return None
        if fold.ended:
            await self.records(caller).finish(record.task_id, fold.state, error=fold.error, text=fold.text())
        return fold, cursor

    async def record(self, caller: Caller, agent: str, task_id: str) -> TaskRecord:
        """The caller's task `task_id` of `agent`; `TaskNotFoundError` for any other (never another user's data)."""
        try:
            record = await self.records(caller).get(task_id)
        except InvalidIdError:
            record = None
        if record is None or record.agent != agent:
            raise TaskNotFoundError(f"task {task_id[:64]!r} not found")
        return record

    def records(self, caller: Caller) -> TaskRecords:
        runtime = self.runtime
        keys = runtime.task_keys(scope_id=caller.scope_id, user_id=caller.user_id)
        return TaskRecords(redis=runtime.redis, keys=keys, retention_ms=runtime.settings.stream_retention * 1000)

    def session(self, caller: Caller, record: TaskRecord) -> SessionHandle:
        return SessionHandle.of(
            self.runtime, scope_id=caller.scope_id, user_id=caller.user_id, session_id=record.context_id
        )


@dataclass(kw_only=True)
class A2ARequestHandler(RequestHandler):
    """The SDK's request handler on our runtime: every call authenticated, admitted and mapped as `Run` does."""

    servicer: AgentStreamServicer
    """Whose runtime, agents, authenticator and admission checks the A2A calls use."""
    url: str
    """Where clients reach the server (`host:port`), for agent cards."""
    tasks: RedisTaskStore
    http_url: str | None = None
    """Where HTTP clients reach the server (`http://host:port`), for agent cards; `None`: no HTTP port."""

    def default_agent(self) -> str | None:
        """The agent of a call without a tenant: `demo`, or the only hosted agent."""
        agents = self.servicer.agents
        if "demo" in agents:
            return "demo"
        return next(iter(agents)) if len(agents) == 1 else None

    def card(self, name: str) -> a2a.AgentCard:
        """The agent card of hosted agent `name`: reached on this server's gRPC port with tenant `name`."""
        agent = self.servicer.agents[name]
        description = (
            getattr(agent, "description", None) or f"The pydantic-ai agent {name!r}, served by pydantic-ai-stream"
        )
        return a2a.AgentCard(
            name=name,
            description=description,
            version="1.0.0",
            supported_interfaces=[
                a2a.AgentInterface(
                    url=url, protocol_binding=binding.value, tenant=name, protocol_version=PROTOCOL_VERSION_CURRENT
                )
                for url, binding in self._interfaces()
            ],
            capabilities=a2a.AgentCapabilities(streaming=True, extended_agent_card=True),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[
                a2a.AgentSkill(
                    id=name, name=name, description=description, tags=["pydantic-ai"], output_modes=["text/plain"]
                )
            ],
        )

    def _interfaces(self) -> list[tuple[str, TransportProtocol]]:
        """Where and how the agents are reached: gRPC, and JSON-RPC and REST on the HTTP port if there is one."""
        interfaces = [(self.url, TransportProtocol.GRPC)]
        if self.http_url is not None:
            base = self.http_url.rstrip("/")
            interfaces += [
                (base + JSONRPC_PATH, TransportProtocol.JSONRPC),
                (base + REST_PATH, TransportProtocol.HTTP_JSON),
            ]
        return interfaces

    async def on_message_send_stream(
        self, params: a2a.SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """Start a run of the tenant's agent with the message's text; its task, then its events until `end`."""
        async with _errors(context):
            caller, agent = await self._caller(context)
            session, record, request = await self._start(caller, agent, params.message, context)
            task = a2a.Task(
                id=record.task_id, context_id=record.context_id, status=a2a.TaskStatus(state=a2a.TASK_STATE_SUBMITTED)
            )
            task.history.append(request)
            yield task
            async for event in self._follow(session, record):
                yield event

    async def on_message_send(self, params: a2a.SendMessageRequest, context: ServerCallContext) -> a2a.Task:
        """Start a run; its task once it ended (at once, SUBMITTED, with `return_immediately`)."""
        async with _errors(context):
            caller, agent = await self._caller(context)
            session, record, request = await self._start(caller, agent, params.message, context)
            fold = TaskFold(task_id=record.task_id, context_id=record.context_id)
            if not params.configuration.return_immediately:
                async for _ in self._follow(session, record, fold):
                    pass
            task = fold.task()
            task.history.append(request)
            return task

    async def on_subscribe_to_task(
        self, params: a2a.SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """The task as it is now, then its run's events until `end`; `UnsupportedOperationError` for a task that
        ended (as the SDK's own handler answers)."""
        async with _errors(context):
            caller, agent = await self._caller(context)
            record = await self.tasks.record(caller, agent, params.id)
            folded = await self.tasks.fold(caller, record)
            if folded is None or folded[0].ended:
                state = (_ended_task(record) if folded is None else folded[0].task()).status.state
                raise UnsupportedOperationError(
                    f"Task {record.task_id} is in terminal state: {a2a.TaskState.Name(state)}"
                )
            fold, cursor = folded
            task = fold.shown()
            task.history.extend(_history(record))
            yield task
            async for event in self._follow(self.tasks.session(caller, record), record, fold, after=cursor):
                yield event

    async def on_get_task(self, params: a2a.GetTaskRequest, context: ServerCallContext) -> a2a.Task | None:
        """The task as its run's stream has it so far, with its history (`history_length`: its last messages)."""
        async with _errors(context):
            await self._caller(context)
            validate_history_length(params)
            task = await self.tasks.get(params.id, context)
            return None if task is None else apply_history_length(task, params)

    async def on_list_tasks(self, params: a2a.ListTasksRequest, context: ServerCallContext) -> a2a.ListTasksResponse:
        """The caller's tasks of the tenant's agent, newest first (`history_length` as for `GetTask`)."""
        async with _errors(context):
            await self._caller(context)
            validate_history_length(params)
            page = await self.tasks.list(params, context)
            for task in page.tasks:
                task.CopyFrom(apply_history_length(task, params))
            return page

    async def on_cancel_task(self, params: a2a.CancelTaskRequest, context: ServerCallContext) -> a2a.Task | None:
        """Cancel the task's run (only that run of its session), wait for its `end`, and return the task."""
        async with _errors(context):
            caller, agent = await self._caller(context)
            record = await self.tasks.record(caller, agent, params.id)
            session = self.tasks.session(caller, record)
            if await session.cancel_run(run_id=record.task_id) in (CancelState.NONE, CancelState.ALREADY):
                task = await self.tasks.snapshot(caller, record)
                if task.status.state in (a2a.TASK_STATE_COMPLETED, a2a.TASK_STATE_FAILED, a2a.TASK_STATE_CANCELED):
                    raise TaskNotCancelableError(f"task {record.task_id} already ended")
                return task
            fold = TaskFold(task_id=record.task_id, context_id=record.context_id)
            try:
                async with asyncio.timeout(_CANCEL_WAIT):
                    async for _ in self._follow(session, record, fold):
                        pass
            except TimeoutError:
                pass
            return fold.task()

    async def on_get_extended_agent_card(
        self, params: a2a.GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> a2a.AgentCard:
        """The card of the tenant's agent (or the default one), for an authenticated caller who may run it."""
        async with _errors(context):
            _, agent = await self._caller(context)
            return self.card(agent)

    async def on_create_task_push_notification_config(
        self, params: a2a.TaskPushNotificationConfig, context: ServerCallContext
    ) -> a2a.TaskPushNotificationConfig:
        """Not supported (subscribe to the task instead), said to authenticated callers only."""
        await self._unsupported_push(context)

    async def on_get_task_push_notification_config(
        self, params: a2a.GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> a2a.TaskPushNotificationConfig:
        """Not supported, said to authenticated callers only."""
        await self._unsupported_push(context)

    async def on_list_task_push_notification_configs(
        self, params: a2a.ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> a2a.ListTaskPushNotificationConfigsResponse:
        """Not supported, said to authenticated callers only."""
        await self._unsupported_push(context)

    async def on_delete_task_push_notification_config(
        self, params: a2a.DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        """Not supported, said to authenticated callers only."""
        await self._unsupported_push(context)

    async def _unsupported_push(self, context: ServerCallContext) -> NoReturn:
        """Push notifications are not offered: every A2A call authenticates first, this one too."""
        async with _errors(context):
            await self._caller(context)
        raise PushNotificationNotSupportedError

    async def _caller(self, context: ServerCallContext) -> tuple[Caller, str]:
        """The authenticated caller and the tenant's agent, which the caller may run: a caller limited to some
        agents neither starts, reads, lists nor cancels tasks of another."""
        if (grpc_context := _grpc_context(context)) is not None:
            caller = await self.servicer.authenticate(grpc_context)
        else:  # over HTTP, `a2a_routes` authenticated the request before the SDK's routes saw it
            caller = context.state[_HTTP_CALLER]
        agent = context.tenant or self.default_agent()
        if agent is None:
            hosted = ", ".join(sorted(self.servicer.agents))
            raise UnknownAgentError(f"name the agent as the request's tenant; hosted: {hosted}")
        self.servicer.admission.check_agent(caller, agent)
        context.state[_CALLER] = (caller, agent)
        return caller, agent

    def _traceparent(self, context: ServerCallContext) -> str | None:
        """The caller's trace a run it starts continues (its `traceparent` metadata or header)."""
        if (grpc_context := _grpc_context(context)) is not None:
            return self.servicer.traceparent(grpc_context)
        telemetry = self.servicer.runtime.telemetry
        headers: dict[str, str] = context.state.get("headers", {})
        return telemetry.traceparent(headers.items()) if telemetry is not None else None

    async def _start(
        self, caller: Caller, agent: str, message: a2a.Message, context: ServerCallContext
    ) -> tuple[SessionHandle, TaskRecord, a2a.Message]:
        """Submit the run of `message`; its session, its task's record and the message as the task keeps it."""
        if message.task_id:
            raise InvalidParamsError("a task here is one run: send the next message with its context_id, no task_id")
        if other := next((part.WhichOneof("content") for part in message.parts if not part.HasField("text")), None):
            raise ContentTypeNotSupportedError(f"the agents here take text parts only; the message has a {other} part")
        if len(message.message_id) > _MAX_ID_CHARS:
            raise InvalidParamsError(f"message_id is {len(message.message_id)} characters; at most {_MAX_ID_CHARS}")
        prompt = "\n".join(part.text for part in message.parts)
        if not prompt:
            raise InvalidRequestError("the message has no text part")
        context_id = message.context_id or uuid.uuid4().hex
        admission = self.servicer.admission
        session = await admission.admit(caller, agent=agent, prompt=prompt, session_id=context_id)
        await self._settle_previous(caller, session)
        traceparent = self._traceparent(context)
        run = await admission.submit(session, agent=agent, prompt=prompt, traceparent=traceparent)
        # What replies echo and the task's history holds: the prompt's parts (bounded by `max_prompt_bytes`),
        # never the request's other fields.
        request = a2a.Message(
            message_id=message.message_id,
            context_id=context_id,
            task_id=run.run_id,
            role=a2a.ROLE_USER,
            parts=[a2a.Part(text=part.text) for part in message.parts],
        )
        record = TaskRecord(
            task_id=run.run_id,
            context_id=context_id,
            agent=agent,
            begin_event_id=run.begin_event_id,
            created_ms=now_ms(),
            message=json_format.MessageToJson(request, indent=None),
        )
        await self.tasks.records(caller).add(record)
        return session, record, request

    async def _settle_previous(self, caller: Caller, session: SessionHandle) -> None:
        """Note the outcome of the session's last task if no reader saw it end: a new run replaces the stream."""
        try:
            first = await session.stream.read_range(after="0-0", count=1)
        except CursorExpiredError:
            return
        run_id = first[0].body.get("run_id") if first and first[0].type == BEGIN else None
        if isinstance(run_id, str):
            with contextlib.suppress(InvalidIdError):
                record = await self.tasks.records(caller).get(run_id)
                if record is not None and not record.state:
                    await self.tasks.snapshot(caller, record)

    async def _follow(
        self, session: SessionHandle, record: TaskRecord, fold: TaskFold | None = None, *, after: str = ""
    ) -> AsyncGenerator[Event]:
        """The A2A events of the run's entries after its `begin` (or entry `after`, which `fold` has folded),
        until its `end` (noted in its record)."""
        fold = fold or TaskFold(task_id=record.task_id, context_id=record.context_id)
        heartbeat = self.servicer.heartbeat_interval
        after = after or record.begin_event_id
        entries = session.listen_entries(after=after, wait=10, timeout=None, heartbeat=heartbeat)
        async for entry in entries:
            if entry is None:  # silence: proxies cut idle streams, so the state is said again
                yield fold.status()
                continue
            for event in fold.entry(entry):
                yield event
            if fold.ended:
                keys = session.keys
                records = self.tasks.records(Caller(scope_id=keys.scope_id, user_id=keys.user_id))
                await records.finish(record.task_id, fold.state, error=fold.error, text=fold.text())
                return


_OUTCOME_LOST = (
    "the task ended but its outcome was not kept: its session ran again outside A2A (or its stream expired) "
    "before the task was read to its end"
)


def _ended_task(record: TaskRecord) -> a2a.Task:
    """A task whose run's stream is gone (expired, or replaced by the session's next run): as its record has it.
    Without an outcome in the record the run still ended (a session runs one run at a time): a terminal state
    that says so, rather than a task a poller would wait on for ever."""
    state, error = (record.state, record.error) if record.state else ("failed", _OUTCOME_LOST)
    fold = TaskFold(task_id=record.task_id, context_id=record.context_id, state=state, error=error)
    task = fold.task()
    if record.text:
        task.artifacts.append(_artifact(record.text))
    return task


def _history(record: TaskRecord) -> list[a2a.Message]:
    """The task's history: the message that started it."""
    return [json_format.Parse(record.message, a2a.Message())] if record.message else []


def _call(context: ServerCallContext) -> tuple[Caller, str]:
    """The authenticated caller and the tenant's agent of a call (put there by `A2ARequestHandler`)."""
    call: tuple[Caller, str] = context.state[_CALLER]
    return call


def _grpc_context(context: ServerCallContext) -> grpc.aio.ServicerContext[Any, Any] | None:
    """The gRPC call of a call over gRPC (the SDK's `GrpcHandler` puts it there); `None` over HTTP."""
    grpc_context: grpc.aio.ServicerContext[Any, Any] | None = context.state.get("grpc_context")
    return grpc_context


_A2A_ERROR_OF: dict[grpc.StatusCode, type[A2AError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidParamsError,
    grpc.StatusCode.NOT_FOUND: InvalidParamsError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidParamsError,
    grpc.StatusCode.UNAVAILABLE: InternalError,
    grpc.StatusCode.DEADLINE_EXCEEDED: InternalError,
}
"""The A2A error an HTTP caller gets for the library's errors (by their gRPC code; others: `InvalidRequestError`)."""


@contextlib.asynccontextmanager
async def _errors(context: ServerCallContext) -> AsyncIterator[None]:
    """The library's errors as the call's transport says them: gRPC status codes (`statuses`), or over HTTP the
    A2A errors the SDK's routes answer with, their message led by the same code's name."""
    if (grpc_context := _grpc_context(context)) is not None:
        async with statuses(grpc_context):
            yield
        return
    try:
        yield
    except A2AError:
        raise
    except Exception as e:
        if (code := status_of(e)) is None:
            raise
        raise _A2A_ERROR_OF.get(code, A2AInvalidRequestError)(f"{code.name}: {e}") from e


def add_a2a(
    server: grpc.aio.Server, servicer: AgentStreamServicer, *, url: str, http_url: str | None = None
) -> A2ARequestHandler:
    """Serve `A2AService` on `server` for `servicer`'s hosted agents (the SDK's `GrpcHandler` on our handler);
    returns the handler, which `a2a_routes` serves over HTTP too (`http_url`: where, as cards say)."""
    handler = A2ARequestHandler(
        servicer=servicer, url=url, http_url=http_url, tasks=RedisTaskStore(runtime=servicer.runtime)
    )
    a2a_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)  # type: ignore[no-untyped-call]
    return handler


def a2a_routes(handler: A2ARequestHandler) -> list[BaseRoute]:
    """A2A over HTTP on `handler` (the one the gRPC service uses): the SDK's JSON-RPC (`JSONRPC_PATH`) and REST
    (`REST_PATH`) routes behind our authentication, the default agent's card at `/.well-known/agent-card.json` and
    each agent's at `/a2a/agents/<name>/.well-known/agent-card.json` (public, as discovery needs)."""
    context_builder = _HttpCallContextBuilder()
    rpc = Router(
        routes=[
            *create_jsonrpc_routes(handler, JSONRPC_PATH.removeprefix(A2A_HTTP_PREFIX), context_builder),
            Mount(REST_PATH.removeprefix(A2A_HTTP_PREFIX), routes=create_rest_routes(handler, context_builder)),
        ]
    )
    routes: list[BaseRoute] = []
    if (default := handler.default_agent()) is not None:
        routes += create_agent_card_routes(handler.card(default))
    for name in handler.servicer.agents:
        card_url = f"{A2A_HTTP_PREFIX}/agents/{quote(name, safe='')}{AGENT_CARD_WELL_KNOWN_PATH}"
        routes += create_agent_card_routes(handler.card(name), card_url=card_url)
    routes.append(Mount(A2A_HTTP_PREFIX, app=_Authenticated(app=rpc, servicer=handler.servicer)))
    return routes


@dataclass(frozen=True, kw_only=True)
class _Authenticated:
    """Lets only authenticated requests through to `app` (401 otherwise), as the gRPC edge authenticates every
    call first; the caller goes on in the request's state (`_HTTP_CALLER`)."""

    app: ASGIApp
    servicer: AgentStreamServicer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            values = [value.decode("latin-1") for key, value in scope["headers"] if key == b"authorization"]
            try:
                caller = await self.servicer.admission.authenticate(values)
            except AuthError as e:
                response = JSONResponse({"error": str(e)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[_HTTP_CALLER] = caller
        await self.app(scope, receive, send)


class _HttpCallContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context of an HTTP request, with the caller `_Authenticated` let in."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[_HTTP_CALLER] = request.scope["state"][_HTTP_CALLER]
        return context
