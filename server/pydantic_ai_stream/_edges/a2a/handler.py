"""The A2A SDK's request handler on our runtime: every call authenticated, admitted and mapped as `Run` does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, NoReturn

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import RequestHandler
from a2a.types import a2a_pb2 as a2a
from a2a.utils.constants import PROTOCOL_VERSION_CURRENT, TransportProtocol
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    UnsupportedOperationError,
)
from a2a.utils.task import apply_history_length, validate_history_length
from google.protobuf import json_format

from ..._core.errors import InvalidRequestError, UnknownAgentError
from ..._core.submission import Submitted
from ..._read.handle import SessionHandle
from ..._runtime.auth import Caller
from ..._store.results import CancelState
from ..grpc.servicer import AgentStreamServicer
from . import JSONRPC_PATH, REST_PATH
from .answers import tool_answers
from .calls import CALLER, HTTP_CALLER, call_errors, grpc_call
from .fold import TaskFold, ended_task, history
from .store import RedisTaskStore
from .tasks import TaskRecord, now_ms

__all__ = ["A2ARequestHandler"]

_MAX_ID_CHARS = 256
"""Longest `message_id` accepted: replies echo it."""
_CANCEL_WAIT = 10.0
"""Seconds `CancelTask` waits for the cancelled run's `end` before it answers with the task as it is."""


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
        """Start a run of the tenant's agent with the message's text; its task, then its events until `end` or until
        it waits for input. A message naming a waiting task answers it (`_answer`): the task, then the run's
        events as it goes on."""
        async with call_errors(context):
            caller, agent = await self._caller(context)
            if params.message.task_id:
                session, record, fold, cursor = await self._answer(caller, agent, params.message)
                task = fold.shown() if fold is not None else ended_task(record)
                task.history.extend(history(record))
                yield task
                if fold is not None and not fold.ended and not fold.waiting:
                    async for event in self._follow(session, record, fold, cursor=cursor):
                        yield event
                return
            session, record, request = await self._start(caller, agent, params.message, context)
            task = a2a.Task(
                id=record.task_id, context_id=record.context_id, status=a2a.TaskStatus(state=a2a.TASK_STATE_SUBMITTED)
            )
            task.history.append(request)
            yield task
            async for event in self._follow(session, record):
                yield event

    async def on_message_send(self, params: a2a.SendMessageRequest, context: ServerCallContext) -> a2a.Task:
        """Start a run (or answer a waiting one: `_answer`); its task once it ended or waits for input (at once,
        with `return_immediately`)."""
        async with call_errors(context):
            caller, agent = await self._caller(context)
            if params.message.task_id:
                session, record, fold, cursor = await self._answer(caller, agent, params.message)
                if fold is None:
                    return apply_history_length(ended_task(record), params.configuration)
                if not (fold.ended or fold.waiting or params.configuration.return_immediately):
                    async for _ in self._follow(session, record, fold, cursor=cursor):
                        pass
                task = fold.task()
                task.history.extend(history(record))
                return task
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
        async with call_errors(context):
            caller, agent = await self._caller(context)
            record = await self.tasks.record(caller, agent, params.id)
            folded = await self.tasks.fold(caller, record)
            if folded is None or folded[0].ended:
                state = (ended_task(record) if folded is None else folded[0].task()).status.state
                raise UnsupportedOperationError(
                    f"Task {record.task_id} is in terminal state: {a2a.TaskState.Name(state)}"
                )
            fold, cursor = folded
            task = fold.shown()
            task.history.extend(history(record))
            yield task
            async for event in self._follow(self.tasks.session(caller, record), record, fold, cursor=cursor):
                yield event

    async def on_get_task(self, params: a2a.GetTaskRequest, context: ServerCallContext) -> a2a.Task | None:
        """The task as its run's stream has it so far, with its history (`history_length`: its last messages)."""
        async with call_errors(context):
            await self._caller(context)
            validate_history_length(params)
            task = await self.tasks.get(params.id, context)
            return None if task is None else apply_history_length(task, params)

    async def on_list_tasks(self, params: a2a.ListTasksRequest, context: ServerCallContext) -> a2a.ListTasksResponse:
        """The caller's tasks of the tenant's agent, newest first (`history_length` as for `GetTask`)."""
        async with call_errors(context):
            await self._caller(context)
            validate_history_length(params)
            page = await self.tasks.list(params, context)
            for task in page.tasks:
                task.CopyFrom(apply_history_length(task, params))
            return page

    async def on_cancel_task(self, params: a2a.CancelTaskRequest, context: ServerCallContext) -> a2a.Task | None:
        """Cancel the task's run (only that run of its session), wait for its `end`, and return the task."""
        async with call_errors(context):
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
                    async for _ in self._follow(session, record, fold, through_input=True):
                        pass
            except TimeoutError:
                pass
            return fold.task()

    async def on_get_extended_agent_card(
        self, params: a2a.GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> a2a.AgentCard:
        """The card of the tenant's agent (or the default one), for an authenticated caller who may run it."""
        async with call_errors(context):
            _, agent = await self._caller(context)
            return self.card(agent)

    async def on_create_task_push_notification_config(self, params: Any, context: ServerCallContext) -> NoReturn:
        """Push notifications are not offered (subscribe to the task instead), said to authenticated callers
        only: every A2A call authenticates first, this one too."""
        async with call_errors(context):
            await self._caller(context)
        raise PushNotificationNotSupportedError

    on_get_task_push_notification_config = on_create_task_push_notification_config
    on_list_task_push_notification_configs = on_create_task_push_notification_config
    on_delete_task_push_notification_config = on_create_task_push_notification_config

    async def _caller(self, context: ServerCallContext) -> tuple[Caller, str]:
        """The authenticated caller and the tenant's agent, which the caller may run: a caller limited to some
        agents neither starts, reads, lists nor cancels tasks of another."""
        if (grpc_context := grpc_call(context)) is not None:
            caller = await self.servicer.authenticate(grpc_context)
        else:  # over HTTP, `a2a_routes` authenticated the request before the SDK's routes saw it
            caller = context.state[HTTP_CALLER]
        agent = context.tenant or self.default_agent()
        if agent is None:
            hosted = ", ".join(sorted(self.servicer.agents))
            raise UnknownAgentError(f"name the agent as the request's tenant; hosted: {hosted}")
        self.servicer.admission.check_agent(caller, agent)
        context.state[CALLER] = (caller, agent)
        return caller, agent

    def _traceparent(self, context: ServerCallContext) -> str | None:
        """The caller's trace a run it starts continues (its `traceparent` metadata or header)."""
        if (grpc_context := grpc_call(context)) is not None:
            return self.servicer.traceparent(grpc_context)
        telemetry = self.servicer.runtime.telemetry
        headers: dict[str, str] = context.state.get("headers", {})
        return telemetry.traceparent(headers.items()) if telemetry is not None else None

    async def _start(
        self, caller: Caller, agent: str, message: a2a.Message, context: ServerCallContext
    ) -> tuple[SessionHandle, TaskRecord, a2a.Message]:
        """Submit the run of `message`; its session, its task's record and the message as the task keeps it."""
        if other := next((part.WhichOneof("content") for part in message.parts if not part.HasField("text")), None):
            raise ContentTypeNotSupportedError(f"the agents here take text parts only; the message has a {other} part")
        if len(message.message_id) > _MAX_ID_CHARS:
            raise InvalidParamsError(f"message_id is {len(message.message_id)} characters; at most {_MAX_ID_CHARS}")
        prompt = "\n".join(part.text for part in message.parts)
        if not prompt:
            raise InvalidRequestError("the message has no text part")
        context_id = message.context_id or uuid.uuid4().hex
        session, run = await self._submit(caller, agent, prompt, context_id, traceparent=self._traceparent(context))
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

    async def _submit(
        self, caller: Caller, agent: str, prompt: str, session_id: str, *, traceparent: str | None
    ) -> tuple[SessionHandle, Submitted]:
        """Admit and submit the run of `prompt`, as `Run` does: the one place A2A starts a run."""
        admission = self.servicer.admission
        session = await admission.admit(caller, agent=agent, prompt=prompt, session_id=session_id)
        await self.tasks.settle_last(caller, session)
        run = await admission.submit(session, agent=agent, prompt=prompt, traceparent=traceparent)
        return session, run

    def _follow(
        self,
        session: SessionHandle,
        record: TaskRecord,
        fold: TaskFold | None = None,
        *,
        cursor: str = "",
        through_input: bool = False,
    ) -> AsyncGenerator[Event]:
        """The task's events until its run's `end` or its wait for input (`RedisTaskStore.follow`), said again after
        each silence."""
        fold = fold or TaskFold(task_id=record.task_id, context_id=record.context_id)
        heartbeat = self.servicer.heartbeat_interval
        return self.tasks.follow(session, record, fold, cursor=cursor, heartbeat=heartbeat, through_input=through_input)

    async def _answer(
        self, caller: Caller, agent: str, message: a2a.Message
    ) -> tuple[SessionHandle, TaskRecord, TaskFold | None, str]:
        """Answer the calls the run of the message's task waits on with its data part (`answers.tool_answers`), as
        `Respond` does: the session, the task's record, its run folded so far (`None`: it ended, its outcome in
        the record) and the id of the last entry folded. A bad answer is `InvalidParamsError`, writing nothing."""
        record = await self.tasks.record(caller, agent, message.task_id)
        if message.context_id and message.context_id != record.context_id:
            raise InvalidParamsError(f"context {message.context_id[:64]!r} is not the context of task {record.task_id}")
        answers = tool_answers(message)
        folded = await self.tasks.fold(caller, record)
        fold, cursor = folded if folded is not None else (None, "")
        if answers is None:
            if fold is not None and fold.waiting:
                raise InvalidParamsError(
                    f"task {record.task_id} waits for answers to its tool calls, not text: send one data part "
                    '{"answers": [...]} (its status message lists the calls)'
                )
            raise InvalidParamsError("a task here is one run: send the next message with its context_id, no task_id")
        session = self.tasks.session(caller, record)
        try:
            responded = await session.respond(record.task_id, answers)
        except InvalidRequestError as e:
            raise InvalidParamsError(str(e)) from e
        if fold is not None:
            fold.answered(responded.pending)
        return session, record, fold, cursor
