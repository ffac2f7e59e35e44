"""`TaskFold`: a run's stream entries as A2A status updates and text artifact chunks."""

from __future__ import annotations

import json
from typing import Any

from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format

from pydantic_ai_stream import Entry
from pydantic_ai_stream._core.names import END, ERROR, EVENT, ORIGIN_PYDANTIC_AI, ORIGIN_STREAM
from pydantic_ai_stream._edges.a2a import A2A_SERVICE_NAME
from pydantic_ai_stream._edges.a2a.fold import TaskFold

_ids = iter(range(1, 10_000))


def _entry(type_: str, body: dict[str, Any], origin: str = ORIGIN_PYDANTIC_AI) -> Entry:
    return Entry(id=f"1-{next(_ids)}", type=type_, origin=origin, body=body, body_json=json.dumps(body))


def _start(idx: int, event_idx: int, content: str, kind: str = "text") -> Entry:
    return _entry(
        EVENT, {"idx": idx, "event": "part_start", "event_idx": event_idx, "part_kind": kind, "content": content}
    )


def _delta(idx: int, event_idx: int, delta: str, kind: str = "text") -> Entry:
    body = {"idx": idx, "event": "part_delta", "event_idx": event_idx, "part_kind": kind, "part_delta_kind": kind}
    return _entry(EVENT, {**body, "content_delta": delta})


def _client_view(events: list[Any]) -> tuple[str, list[str], bool]:
    """What an A2A client shows: the artifact (appended or replaced chunks), the states, the last chunk flag."""
    text, states, last = "", [], False
    for event in events:
        if isinstance(event, a2a.TaskArtifactUpdateEvent):
            chunk = "".join(p.text for p in event.artifact.parts)
            text = text + chunk if event.append else chunk
            last = event.last_chunk
        else:
            states.append(a2a.TaskState.Name(event.status.state))
    return text, states, last


def _fold(entries: list[Entry]) -> tuple[TaskFold, list[Any]]:
    fold = TaskFold(task_id="r1", context_id="s1")
    return fold, [event for entry in entries for event in fold.entry(entry)]


def test_text_streams_as_appended_chunks_and_the_run_completes() -> None:
    fold, events = _fold(
        [
            _entry(EVENT, {"idx": 0, "event": "llm-begin"}),
            _start(0, 0, "thinking", kind="thinking"),
            _start(0, 1, "Hello"),
            _delta(0, 1, ", world"),
            _entry(END, {"run_id": "r1"}, origin=ORIGIN_STREAM),
        ]
    )
    assert _client_view(events) == ("Hello, world", ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"], True)
    artifacts = [e for e in events if isinstance(e, a2a.TaskArtifactUpdateEvent)]
    assert [e.append for e in artifacts] == [False, True, True]  # the first chunk starts the artifact
    assert fold.task().status.state == a2a.TASK_STATE_COMPLETED


def test_a_resumed_run_shows_no_text_twice() -> None:
    """A worker died in node 1; another resumes from node 1 and redoes it in full: the client ends with the
    text once, node 0's text kept, node 1's as redone."""
    fold, events = _fold(
        [
            _entry(EVENT, {"idx": 0, "event": "llm-begin"}),
            _start(0, 0, "Let me look. "),
            _entry(EVENT, {"idx": 1, "event": "llm-begin"}),
            _start(1, 0, "It is "),
            _delta(1, 0, "sun"),
            _entry(EVENT, {"idx": 1, "event": "resumed", "attempt": 2}, origin=ORIGIN_STREAM),
            _entry(EVENT, {"idx": 1, "event": "llm-begin"}),
            _start(1, 0, "It is "),
            _delta(1, 0, "sunny."),
            _entry(END, {"run_id": "r1"}, origin=ORIGIN_STREAM),
        ]
    )
    text, states, _ = _client_view(events)
    assert text == "Let me look. It is sunny."
    assert fold.text() == text
    assert states == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]


def test_a_resume_that_drops_nothing_sent_appends_as_before() -> None:
    _, events = _fold(
        [
            _start(0, 0, "Done: "),
            _entry(EVENT, {"idx": 1, "event": "resumed", "attempt": 2}, origin=ORIGIN_STREAM),
            _start(1, 0, "yes"),
        ]
    )
    artifacts = [e for e in events if isinstance(e, a2a.TaskArtifactUpdateEvent)]
    assert [(e.append, e.artifact.parts[0].text) for e in artifacts] == [(False, "Done: "), (True, "yes")]


def test_cancel_and_failure_states() -> None:
    fold, events = _fold(
        [_start(0, 0, "Hi"), _entry(ERROR, {"msg": "canceled"}, ORIGIN_STREAM), _entry(END, {}, ORIGIN_STREAM)]
    )
    assert _client_view(events)[1] == ["TASK_STATE_WORKING", "TASK_STATE_CANCELED"]
    fold, events = _fold([_entry(ERROR, {"msg": "crashed - boom"}, ORIGIN_STREAM), _entry(END, {}, ORIGIN_STREAM)])
    assert _client_view(events)[1] == ["TASK_STATE_FAILED"]
    assert fold.task().status.message.parts[0].text == "crashed - boom"
    # A developer's own error event does not end or fail the run.
    fold, _ = _fold([_entry(ERROR, {"msg": "retrying"}, "developer"), _entry(END, {}, ORIGIN_STREAM)])
    assert fold.task().status.state == a2a.TASK_STATE_COMPLETED


def test_the_service_name_is_the_sdks() -> None:
    assert a2a.DESCRIPTOR.services_by_name["A2AService"].full_name == A2A_SERVICE_NAME


_CALLS = [
    {"tool_call_id": "c1", "tool_name": "drop_db", "args": {"name": "staging"}, "kind": "approval"},
    {"tool_call_id": "c2", "tool_name": "page", "args": {}, "kind": "external"},
]


def _waits() -> Entry:
    return _entry(EVENT, {"idx": 0, "event": "input_required", "calls": _CALLS, "deadline_ms": 5}, ORIGIN_STREAM)


def test_a_waiting_run_is_input_required_with_its_calls_as_data_until_it_goes_on() -> None:
    fold, events = _fold([_entry(EVENT, {"idx": 0, "event": "llm-begin"}), _waits()])
    assert _client_view(events)[1] == ["TASK_STATE_WORKING", "TASK_STATE_INPUT_REQUIRED"]
    assert fold.waiting
    status = fold.task().status
    assert status.state == a2a.TASK_STATE_INPUT_REQUIRED
    [data] = [json_format.MessageToDict(p.data) for p in status.message.parts if p.HasField("data")]
    assert data == {"calls": _CALLS, "deadline_ms": 5}
    assert fold.status().status.state == a2a.TASK_STATE_INPUT_REQUIRED  # a heartbeat says it again
    fold.answered(["c2"])  # some answers: still waiting, for the rest
    [data] = [json_format.MessageToDict(p.data) for p in fold.task().status.message.parts if p.HasField("data")]
    assert data["pending"] == ["c2"]
    # The run goes on (answered elsewhere): its next event makes the task WORKING again.
    events = [e for entry in (_start(1, 0, "done"), _entry(END, {}, ORIGIN_STREAM)) for e in fold.entry(entry)]
    assert _client_view(events) == ("done", ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"], True)
    assert not fold.waiting


def test_a_waiting_run_cancelled_or_expired_ends_so() -> None:
    _, events = _fold([_waits(), _entry(ERROR, {"msg": "canceled"}, ORIGIN_STREAM), _entry(END, {}, ORIGIN_STREAM)])
    assert _client_view(events)[1] == ["TASK_STATE_INPUT_REQUIRED", "TASK_STATE_CANCELED"]
    expired = _entry(ERROR, {"msg": "input expired"}, ORIGIN_STREAM)
    fold, events = _fold([_waits(), expired, _entry(END, {}, ORIGIN_STREAM)])
    assert _client_view(events)[1] == ["TASK_STATE_INPUT_REQUIRED", "TASK_STATE_FAILED"]
    assert fold.task().status.message.parts[0].text == "input expired"
    assert not fold.waiting
