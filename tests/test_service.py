"""The servicer's own parts: `event_to_proto`, and the Listen response cache within its byte budget."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pydantic_ai_stream._redis import Entry
from pydantic_ai_stream._service import ListenResponseCache, event_to_proto
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


def _begin(i: int, size: int) -> Entry:
    body = {"user_prompt": "x" * size}
    return Entry(id=f"{i}-0", type="begin", origin="pydantic-ai-stream", body=body, body_json=json.dumps(body))


def test_the_response_cache_is_bounded_in_bytes_not_entries() -> None:
    cache = ListenResponseCache(max_bytes=4 << 20)
    for i in range(200):
        cache.response(f"s{i}", _begin(i, 100_000))  # 200 begins of 100 kB: 20 MB
    assert cache.size_bytes <= 4 << 20
    first = cache.response("s199", _begin(199, 100_000))
    assert cache.response("s199", _begin(199, 100_000)) is first, "recent entries are shared"


def test_an_entry_too_large_to_share_is_converted_each_time() -> None:
    cache = ListenResponseCache(max_bytes=1 << 20)
    huge = _begin(1, 300_000)
    assert cache.response("s", huge) is not cache.response("s", huge)
    assert cache.size_bytes == 0
    assert cache.response("s", huge).event.body_json == huge.body_json
