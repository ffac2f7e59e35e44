"""`event_to_proto`: stream entries as the typed events Listen sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pydantic_ai_stream.service import event_to_proto
from pydantic_ai_stream.store import Entry
from pydantic_ai_stream.v1 import stream_pb2 as pb


def _entry(body: dict[str, Any], type_: str = "event") -> Entry:
    return Entry(id="1-0", type=type_, origin="developer", body=body, body_json=json.dumps(body))


def test_a_failed_tool_return_has_its_outcome() -> None:
    body = {"idx": 0, "event": "part_start", "part_kind": "tool-return", "content": "boom", "outcome": "failed"}
    event = event_to_proto(_entry(body))
    assert (event.outcome, event.part_kind, event.content) == (pb.TOOL_OUTCOME_FAILED, pb.PART_KIND_TOOL_RETURN, "boom")
    assert event_to_proto(_entry({**body, "outcome": "vanished"})).outcome == pb.TOOL_OUTCOME_OTHER


@pytest.mark.parametrize(
    "body",
    [
        {"idx": -1, "event_idx": 2**40},
        {"idx": True, "event": ["part_delta"], "part_kind": {"a": 1}},
        {"part_delta_kind": ["text"], "outcome": 3, "tool_name": 5, "content_delta": None},
        {"args": [1, 2], "content": {"nested": [1]}},
    ],
)
def test_an_event_body_of_unexpected_types_keeps_its_json(body: dict[str, Any]) -> None:
    # Application code may write `event` entries: Listen must still send them.
    event = event_to_proto(_entry(body))
    assert json.loads(event.body_json) == body
    assert not event.HasField("idx")
    assert (event.kind, event.part_kind, event.outcome) == (pb.EVENT_KIND_UNSPECIFIED, pb.PART_KIND_UNSPECIFIED, 0)
