"""The A2A SDK's task store on our Redis: a task read from its record and its run's stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.tasks.task_store import TaskStore
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import TaskNotFoundError, UnsupportedOperationError

from ..._core.cursor import Cursor
from ..._core.errors import CursorExpiredError, InvalidIdError
from ..._core.names import BEGIN
from ..._read.handle import SessionHandle
from ..._runtime.auth import Caller
from ..._runtime.runtime import Runtime
from .calls import caller_of
from .fold import TaskFold, ended_task, history
from .tasks import TaskRecord, TaskRecords

__all__ = ["RedisTaskStore"]

_PAGE = 1000
"""Entries one read of a task's stream asks for."""


@dataclass(kw_only=True)
class RedisTaskStore(TaskStore):
    """The SDK's task store on our Redis: a task is read from its record and its run's stream (runs write them;
    `save` is not how tasks are written here). The caller and agent are the call's (`A2ARequestHandler` puts them
    in the call context's state), so a caller only ever reads its own tasks of the tenant's agent."""

    runtime: Runtime

    async def get(self, task_id: str, context: ServerCallContext) -> a2a.Task | None:
        """The caller's task `task_id` as its run's stream has it so far, or `None`."""
        caller, agent = caller_of(context)
        try:
            record = await self.record(caller, agent, task_id)
        except TaskNotFoundError:
            return None
        return await self.snapshot(caller, record)

    async def list(self, params: a2a.ListTasksRequest, context: ServerCallContext) -> a2a.ListTasksResponse:
        """The caller's tasks of the tenant's agent, newest first (`context_id` and `status` filter the page)."""
        caller, agent = caller_of(context)
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
        caller, agent = caller_of(context)
        await self.record(caller, agent, task_id)
        await self.records(caller).delete(task_id)

    async def snapshot(self, caller: Caller, record: TaskRecord) -> a2a.Task:
        """The task as the stream has it now (or as its record has it, once the stream expired), with its
        history."""
        folded = await self.fold(caller, record)
        task = ended_task(record) if folded is None else folded[0].task()
        task.history.extend(history(record))
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
            await self._finish(caller, record, fold)
        return fold, cursor

    async def follow(
        self,
        session: SessionHandle,
        record: TaskRecord,
        fold: TaskFold,
        *,
        cursor: str = "",
        heartbeat: float | None,
        through_input: bool = False,
    ) -> AsyncGenerator[Event]:
        """The A2A events of the run's entries after its `begin` (or after `cursor`, up to which `fold` has
        folded), until its `end` (noted in its record) or, as the SDK's streams end, until it waits for input
        (`through_input`: on to its end); with `heartbeat`, the state again after each silence."""
        keys = session.keys
        entries = session.listen_entries(
            after=cursor or record.begin_event_id, wait=10, timeout=None, heartbeat=heartbeat
        )
        async for entry in entries:
            if entry is None:  # silence: proxies cut idle streams, so the state is said again
                yield fold.status()
                continue
            for event in fold.entry(entry):
                yield event
            if fold.ended:
                await self._finish(Caller(scope_id=keys.scope_id, user_id=keys.user_id), record, fold)
                return
            if fold.waiting and not through_input:
                return

    async def settle_last(self, caller: Caller, session: SessionHandle) -> None:
        """Note the outcome of the session's last task if no reader saw it end: a new run replaces the stream."""
        try:
            first = await session.stream.read_range(after=Cursor.BEGIN.id, count=1)
        except CursorExpiredError:
            return
        run_id = first[0].body.get("run_id") if first and first[0].type == BEGIN else None
        if isinstance(run_id, str):
            with contextlib.suppress(InvalidIdError):
                record = await self.records(caller).get(run_id)
                if record is not None and not record.state:
                    await self.snapshot(caller, record)

    async def _finish(self, caller: Caller, record: TaskRecord, fold: TaskFold) -> None:
        """Keep the outcome of an ended task in its record: the session's next run replaces its stream."""
        await self.records(caller).finish(record.task_id, fold.state, error=fold.error, text=fold.text())

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
