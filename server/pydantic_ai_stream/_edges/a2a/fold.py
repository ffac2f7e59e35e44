"""A run's stream entries as the A2A events of its task: status updates and the chunks of one text artifact."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from a2a.server.events.event_queue import Event
from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format

from ..._core.entry import Entry
from ..._core.fold import BodyPart, Fold
from ..._core.names import END, ERROR, EVENT, ORIGIN_STREAM
from .answers import input_message
from .tasks import TaskRecord, TaskState

__all__ = ["ARTIFACT_ID", "TaskFold", "artifact", "ended_task", "history"]

ARTIFACT_ID = "answer"
"""The artifact that carries a task's text: the text parts of every node, in order (as `Transcript.text()`)."""

_STATES: dict[TaskState, a2a.TaskState] = {
    "": a2a.TASK_STATE_WORKING,
    "completed": a2a.TASK_STATE_COMPLETED,
    "failed": a2a.TASK_STATE_FAILED,
    "canceled": a2a.TASK_STATE_CANCELED,
}


@dataclass(kw_only=True)
class TaskFold:
    """Folds one run's stream entries (after its `begin`) into A2A events for its task, in order.

    Text streams as chunks of one artifact (`append`). A `resumed` marker (a worker died, another goes on from
    node `idx`) drops the text of node `idx` and after; when that dropped text the client already has, the
    artifact is sent again whole (`append=False`, which replaces it): the client never shows text twice. An
    `input_required` event makes the task INPUT_REQUIRED (the calls in its status message's data part) until
    the run goes on (its next event: WORKING again) or ends.
    """

    task_id: str
    context_id: str
    state: TaskState = ""
    working: bool = False
    """Whether the run started (a node began): the state is WORKING, else SUBMITTED."""
    error: str = ""
    ended: bool = False
    _fold: Fold[BodyPart] = field(default_factory=Fold)
    """The run's output so far, folded as `client.Transcript` folds it."""
    _sent: list[str] = field(default_factory=list)
    """The chunks of the artifact the client has, in order."""
    _opened: bool = False
    """Whether the client has the artifact (possibly empty): later chunks append to it."""
    _input: dict[str, Any] | None = None
    """The body of the `input_required` event the run waits on, if it waits."""
    _pending: list[str] | None = None
    """The calls still without an answer, once some were answered here (else: every call)."""

    @property
    def waiting(self) -> bool:
        """Whether the run waits for answers (the task is INPUT_REQUIRED)."""
        return self._input is not None and not self.state

    def answered(self, pending: list[str]) -> None:
        """The answers given here left `pending` calls unanswered (none: the run goes on, WORKING)."""
        if pending:
            self._pending = pending
        else:
            self._input = self._pending = None

    def text(self) -> str:
        """The text parts' content, node after node."""
        return self._fold.text()

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
        elif entry.type == EVENT and entry.body.get("event") == "input_required":
            self.working = True
            self._input, self._pending = dict(entry.body), None
            events.append(self._status())
        elif entry.type == EVENT:
            if not self.working or self._input is not None:  # started, or went on after its wait
                self.working = True
                self._input = self._pending = None
                events.append(self._status())
            events.extend(self._event(entry.body))
        return events

    def task(self) -> a2a.Task:
        """The task as folded so far: its state and its text as one artifact."""
        task = a2a.Task(id=self.task_id, context_id=self.context_id, status=self._task_status())
        if text := self.text():
            task.artifacts.append(artifact(text))
        return task

    def shown(self) -> a2a.Task:
        """The task as folded so far, for a client that has nothing yet: later events continue from it."""
        text = self.text()
        self._sent, self._opened = ([text], True) if text else ([], False)
        return self.task()

    def _event(self, body: Mapping[str, Any]) -> list[Event]:
        kind, idx, event_idx = body.get("event"), body.get("idx"), body.get("event_idx")
        self._fold.fold(body, lambda: BodyPart.of(body))
        if kind == "part_delta":
            if body.get("part_kind") != "text" or not isinstance(idx, int) or not isinstance(event_idx, int):
                return []
            if self._fold.ends_text(idx, event_idx):  # the common case, without re-joining the text
                delta = str(body.get("content_delta") or "")
                return [self._chunk(delta, append=self._opened)] if delta else []
        elif kind not in ("resumed", "part_start"):
            return []
        return self._resend()

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
            task_id=self.task_id, context_id=self.context_id, artifact=artifact(text), append=append, last_chunk=last
        )

    def _task_status(self) -> a2a.TaskStatus:
        state = _STATES[self.state] if self.working or self.state else a2a.TASK_STATE_SUBMITTED
        status = a2a.TaskStatus(state=state)
        if self.error:
            status.message.CopyFrom(_agent_message(self.error, self.task_id, self.context_id))
        elif self._input is not None and not self.state:
            status.state = a2a.TASK_STATE_INPUT_REQUIRED
            status.message.CopyFrom(input_message(self.task_id, self.context_id, self._input, pending=self._pending))
        return status

    def status(self) -> a2a.TaskStatusUpdateEvent:
        """The task's current state as a status update (also sent again after a silence: a heartbeat)."""
        return self._status()

    def _status(self) -> a2a.TaskStatusUpdateEvent:
        return a2a.TaskStatusUpdateEvent(task_id=self.task_id, context_id=self.context_id, status=self._task_status())


def artifact(text: str) -> a2a.Artifact:
    return a2a.Artifact(artifact_id=ARTIFACT_ID, name=ARTIFACT_ID, parts=[a2a.Part(text=text)])


def _agent_message(text: str, task_id: str, context_id: str) -> a2a.Message:
    return a2a.Message(
        message_id=uuid.uuid4().hex,
        task_id=task_id,
        context_id=context_id,
        role=a2a.ROLE_AGENT,
        parts=[a2a.Part(text=text)],
    )


_OUTCOME_LOST = (
    "the task ended but its outcome was not kept: its session ran again outside A2A (or its stream expired) "
    "before the task was read to its end"
)


def ended_task(record: TaskRecord) -> a2a.Task:
    """A task whose run's stream is gone (expired, or replaced by the session's next run): as its record has it.
    Without an outcome in the record the run still ended (a session runs one run at a time): a terminal state
    that says so, rather than a task a poller would wait on for ever."""
    state, error = (record.state, record.error) if record.state else ("failed", _OUTCOME_LOST)
    fold = TaskFold(task_id=record.task_id, context_id=record.context_id, state=state, error=error)
    task = fold.task()
    if record.text:
        task.artifacts.append(artifact(record.text))
    return task


def history(record: TaskRecord) -> list[a2a.Message]:
    """The task's history: the message that started it."""
    return [json_format.Parse(record.message, a2a.Message())] if record.message else []
