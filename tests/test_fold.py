"""The one fold of a run's events: the gRPC client's `Transcript` and the A2A edge's `TaskFold` agree."""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic_ai_stream._core.entry import Entry
from pydantic_ai_stream._core.fold import BodyPart, Fold
from pydantic_ai_stream._core.names import END, EVENT, ORIGIN_PYDANTIC_AI, ORIGIN_STREAM
from pydantic_ai_stream._edges.a2a.fold import TaskFold
from pydantic_ai_stream._edges.grpc.proto import event_to_proto
from pydantic_ai_stream.client import Transcript

_TEXT = {"event": "part_start", "part_kind": "text"}
_DELTA = {"event": "part_delta", "part_kind": "text", "part_delta_kind": "text"}
_CALL = {"tool_name": "f", "tool_call_id": "c"}
BODIES: list[dict[str, Any]] = [
    {"idx": 0, "event": "llm-begin"},
    {"idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "thinking", "content": "hm"},
    {"idx": 0, **_TEXT, "event_idx": 1, "content": "Let me "},
    {"idx": 0, **_DELTA, "event_idx": 1, "content_delta": "look. "},
    {"idx": 0, "event": "part_start", "event_idx": 2, "part_kind": "tool-call", **_CALL, "args": {}},
    {"idx": 0, "event": "part_start", "part_kind": "tool-return", **_CALL, "content": "42"},
    {"idx": 1, "event": "llm-begin"},
    {"idx": 1, **_TEXT, "event_idx": 0, "content": "It is "},
    {"idx": 1, "event": "resumed", "attempt": 2},
    {"idx": 1, **_TEXT, "event_idx": 0, "content": "It was "},
    {"idx": 1, **_DELTA, "event_idx": 0, "content_delta": "42."},
]


def _entries() -> list[Entry]:
    entries = [Entry(id=f"1-{i}", type=EVENT, origin=ORIGIN_PYDANTIC_AI, body=b, body_json=json.dumps(b))
               for i, b in enumerate(BODIES, 1)]  # fmt: skip
    return [*entries, Entry(id="2-0", type=END, origin=ORIGIN_STREAM, body={}, body_json="{}")]


def test_the_client_and_a2a_fold_the_same_stream_to_the_same_text() -> None:
    transcript, task = Transcript(), TaskFold(task_id="r1", context_id="s1")
    for entry in _entries():
        transcript.apply(event_to_proto(entry))
        task.entry(entry)
    assert transcript.text() == task.text() == "Let me look. It was 42."
    assert (transcript.attempt, transcript.ended, task.ended) == (2, True, True)
    [node_0, _] = transcript.nodes
    assert [p.part_kind_name for p in node_0.parts] == ["thinking", "text", "tool-call", "tool-return"]


def test_the_fold_on_bodies() -> None:
    fold: Fold[BodyPart] = Fold()
    dropped = [fold.fold(body, functools.partial(BodyPart.of, body)) for body in BODIES]
    assert dropped == [False] * 8 + [True, False, False], "only the resume dropped output"
    assert fold.text() == "Let me look. It was 42."
    assert [[p.content for p in node.parts] for node in fold.nodes] == [
        ["hm", "Let me look. ", "", "42"],
        ["It was 42."],
    ]
    assert fold.ends_text(1, 0), "node 1's text ends the output"
    assert not fold.ends_text(0, 1)
