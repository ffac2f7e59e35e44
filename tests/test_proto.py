"""Stream entries as gRPC `Event`s (`event_to_proto`), and the Listen response cache within its byte budget."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic_ai.messages import FinalResultEvent, PartDeltaEvent, PartEndEvent, TextPartDelta, ToolCallPart

from pydantic_ai_stream import Entry, EventMapper
from pydantic_ai_stream._edges.grpc.proto import HEARTBEAT, batch_response, event_to_proto
from pydantic_ai_stream._edges.grpc.servicer import _Responses
from pydantic_ai_stream.server import ListenResponseCache
from pydantic_ai_stream.v1 import stream_pb2 as pb


def _entry(body: Any, type_: str = "event") -> Entry:
    return Entry(id="1-0", type=type_, origin="developer", body=body, body_json=json.dumps(body))


def test_the_mappers_bodies_become_typed_fields() -> None:
    mapper = EventMapper()
    begin = event_to_proto(_entry(mapper.node_begin()))
    assert (begin.type, begin.type_name, begin.kind, begin.idx) == (
        pb.EVENT_TYPE_EVENT,
        "event",
        pb.EVENT_KIND_LLM_BEGIN,
        0,
    )
    delta = event_to_proto(_entry(mapper.event(PartDeltaEvent(index=1, delta=TextPartDelta(content_delta="Hi")))))
    assert (delta.kind, delta.event_idx, delta.part_kind, delta.part_delta_kind, delta.content_delta) == (
        pb.EVENT_KIND_PART_DELTA, 1, pb.PART_KIND_TEXT, pb.PART_KIND_TEXT, "Hi",
    )  # fmt: skip
    assert not delta.HasField("content")
    call = ToolCallPart("get_weather", '{"city": "Paris"}', tool_call_id="c1")
    tool_call = event_to_proto(_entry(mapper.event(PartEndEvent(index=2, part=call))))
    assert (tool_call.part_kind, tool_call.part_kind_name, tool_call.tool_name, tool_call.tool_call_id) == (
        pb.PART_KIND_TOOL_CALL, "tool-call", "get_weather", "c1",
    )  # fmt: skip
    assert dict(tool_call.args) == {"city": "Paris"}
    answer = event_to_proto(_entry(mapper.event(FinalResultEvent(tool_name="final_result", tool_call_id="c2"))))
    assert (answer.kind, answer.tool_name, answer.tool_call_id) == (pb.EVENT_KIND_ANSWER, "final_result", "c2")
    assert not answer.HasField("event_idx")


def test_other_entries_carry_their_type_and_json_only() -> None:
    for type_, expected in (("begin", pb.EVENT_TYPE_BEGIN), ("progress", pb.EVENT_TYPE_CUSTOM)):
        event = event_to_proto(_entry({"idx": 0, "event": "llm-begin"}, type_))
        assert (event.type, event.type_name, event.origin) == (expected, type_, "developer")
        assert (event.HasField("idx"), event.kind) == (False, pb.EVENT_KIND_UNSPECIFIED)
        assert json.loads(event.body_json) == {"idx": 0, "event": "llm-begin"}


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
        [1, 2],
    ],
)
def test_an_event_body_of_unexpected_types_keeps_its_json(body: Any) -> None:
    # Application code may write `event` entries: Listen must still send them.
    event = event_to_proto(_entry(body))
    assert json.loads(event.body_json) == body
    assert not event.HasField("idx")
    assert (event.kind, event.part_kind, event.outcome) == (pb.EVENT_KIND_UNSPECIFIED, pb.PART_KIND_UNSPECIFIED, 0)


def test_an_application_written_event_keeps_every_field_of_the_expected_type() -> None:
    # Not an event the runtime writes (unknown `event`, a field of another type): the rest is still read.
    odd = event_to_proto(_entry({"idx": 3, "event": "progress", "content": {"done": 2}, "tool_name": 5, "args": {}}))
    assert (odd.idx, odd.kind, odd.content, odd.HasField("tool_name")) == (
        3,
        pb.EVENT_KIND_UNSPECIFIED,
        '{"done": 2}',
        False,
    )
    # A known event with fields it does not have: they are read too, as before the bodies were typed.
    extra = event_to_proto(_entry({"idx": 0, "event": "llm-begin", "content": None, "tool_call_id": "c1"}))
    assert (extra.kind, extra.content, extra.tool_call_id) == (pb.EVENT_KIND_LLM_BEGIN, "null", "c1")
    # A known event with one field of another type: only that one is left to `body_json`.
    delta = {"idx": 1, "event": "part_delta", "event_idx": 0, "part_kind": "text", "content_delta": 7,
             "part_delta_kind": "speech"}  # fmt: skip
    event = event_to_proto(_entry(delta))
    assert (event.kind, event.idx, event.event_idx, event.part_kind, event.part_delta_kind) == (
        pb.EVENT_KIND_PART_DELTA, 1, 0, pb.PART_KIND_TEXT, pb.PART_KIND_OTHER,
    )  # fmt: skip
    assert not event.HasField("content_delta")


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


def test_a_resumed_marker_is_typed() -> None:
    entry = Entry(
        id="1-0",
        type="event",
        origin="pydantic-ai-stream",
        body={"idx": 0, "event": "resumed", "attempt": 2},
        body_json='{"idx":0,"event":"resumed","attempt":2}',
    )
    event = event_to_proto(entry)
    assert (event.kind, event.idx, event.attempt) == (pb.EVENT_KIND_RESUMED, 0, 2)


def test_a_batch_built_from_serialized_responses_parses_as_their_events() -> None:
    cache = ListenResponseCache()
    entries = [_begin(i, 10) for i in range(3)]
    batch = pb.ListenResponse.FromString(batch_response([cache.serialized("s", e) for e in entries]))
    assert list(batch.events.events) == [cache.response("s", e).event for e in entries]
    assert pb.ListenResponse.FromString(cache.serialized("s", entries[0])) == cache.response("s", entries[0])
    assert pb.ListenResponse.FromString(HEARTBEAT).WhichOneof("payload") == "heartbeat"


def test_batches_are_bounded_in_events_and_bytes() -> None:
    small, big = [_begin(i, 10) for i in range(5)], [_begin(10 + i, 400_000) for i in range(5)]
    responses = _Responses(cache=ListenResponseCache(), key="s", most=2)
    assert [_count(r) for r in responses.of(small)] == [2, 2, 1]
    assert [_count(r) for r in responses.of(big)] == [2, 2, 1]
    alone = _Responses(cache=ListenResponseCache(), key="s", most=10).of([_begin(20, 700_000), *big[:2]])
    assert [_count(r) for r in alone] == [1, 2], "past MAX_BATCH_BYTES the next event starts a new response"
    assert _Responses(cache=ListenResponseCache(), key="s", most=0).of(small) == [
        ListenResponseCache().serialized("s", e) for e in small
    ], "no batches unless asked for"


def _count(serialized: bytes) -> int:
    response = pb.ListenResponse.FromString(serialized)
    return 1 if response.WhichOneof("payload") == "event" else len(response.events.events)
