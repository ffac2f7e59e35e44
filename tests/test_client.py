"""`Transcript` folds constructed events: the output so far, without what a resumed run superseded."""

from __future__ import annotations

from typing import Any

from pydantic_ai_stream.client import Transcript
from pydantic_ai_stream.v1 import stream_pb2 as pb


def _event(**fields: Any) -> pb.Event:
    args = fields.pop("args", None)
    event = pb.Event(type=pb.EVENT_TYPE_EVENT, type_name="event", **{"origin": "pydantic-ai", **fields})
    if args is not None:
        event.args.update(args)
    return event


def _begin(idx: int) -> pb.Event:
    return _event(idx=idx, kind=pb.EVENT_KIND_LLM_BEGIN)


def _text(idx: int, event_idx: int, content: str) -> pb.Event:
    return _event(
        idx=idx,
        kind=pb.EVENT_KIND_PART_START,
        event_idx=event_idx,
        part_kind=pb.PART_KIND_TEXT,
        part_kind_name="text",
        content=content,
    )


def _delta(idx: int, event_idx: int, delta: str) -> pb.Event:
    return _event(
        idx=idx,
        kind=pb.EVENT_KIND_PART_DELTA,
        event_idx=event_idx,
        part_kind=pb.PART_KIND_TEXT,
        part_delta_kind=pb.PART_KIND_TEXT,
        content_delta=delta,
    )


def _resumed(idx: int, attempt: int) -> pb.Event:
    return _event(idx=idx, kind=pb.EVENT_KIND_RESUMED, attempt=attempt, origin="pydantic-ai-stream")


BEGIN = pb.Event(type=pb.EVENT_TYPE_BEGIN, type_name="begin", origin="pydantic-ai-stream", body_json='{"run_id": "r"}')
END = pb.Event(type=pb.EVENT_TYPE_END, type_name="end", origin="pydantic-ai-stream", body_json="{}")
NODE_0 = [
    _begin(0),
    _text(0, 0, "Hel"),
    _delta(0, 0, "lo"),
    _event(
        idx=0,
        kind=pb.EVENT_KIND_PART_START,
        event_idx=1,
        part_kind=pb.PART_KIND_TOOL_CALL,
        part_kind_name="tool-call",
        tool_name="count_words",
        tool_call_id="call-1",
        args={"text": "a b"},
    ),
    _event(idx=0, kind=pb.EVENT_KIND_LLM_END),
    _event(
        idx=0,
        kind=pb.EVENT_KIND_PART_START,
        part_kind=pb.PART_KIND_TOOL_RETURN,
        part_kind_name="tool-return",
        tool_name="count_words",
        tool_call_id="call-1",
        content="2",
    ),
]
NODE_1_PARTIAL = [_begin(1), _text(1, 0, "par"), _delta(1, 0, "tial")]


def _fold(transcript: Transcript, events: list[pb.Event]) -> list[bool]:
    return [transcript.apply(event) for event in events]


def test_a_resume_drops_the_superseded_node_and_the_redone_one_follows() -> None:
    transcript = Transcript()
    assert _fold(transcript, [BEGIN, *NODE_0, *NODE_1_PARTIAL]) == [False] * 10
    assert transcript.text() == "Hellopartial"

    assert transcript.apply(_resumed(1, 2)) is True
    assert [node.idx for node in transcript.nodes] == [0]
    assert transcript.text() == "Hello"
    assert transcript.attempt == 2

    redone = [
        _begin(1),
        _text(1, 0, "final"),
        _event(idx=1, kind=pb.EVENT_KIND_ANSWER),
        _event(idx=1, kind=pb.EVENT_KIND_LLM_END),
    ]
    assert _fold(transcript, [*redone, END]) == [False] * 5
    assert transcript.text() == "Hellofinal"
    assert (transcript.attempt, transcript.ended, transcript.error) == (2, True, None)
    node_0, node_1 = transcript.nodes
    text, call, ret = node_0.parts
    assert (text.part_kind, text.part_kind_name, text.event_idx, text.content) == (
        pb.PART_KIND_TEXT,
        "text",
        0,
        "Hello",
    )
    assert (call.part_kind, call.event_idx, call.tool_name, call.tool_call_id) == (
        pb.PART_KIND_TOOL_CALL,
        1,
        "count_words",
        "call-1",
    )
    assert call.args == {"text": "a b"}
    assert (ret.part_kind, ret.event_idx, ret.content, ret.tool_call_id, ret.outcome) == (
        pb.PART_KIND_TOOL_RETURN,
        None,
        "2",
        "call-1",
        pb.TOOL_OUTCOME_UNSPECIFIED,
    )
    assert [(p.event_idx, p.content) for p in node_1.parts] == [(0, "final")]


def test_a_resume_from_node_0_drops_everything() -> None:
    transcript = Transcript()
    _fold(transcript, [BEGIN, *NODE_0, *NODE_1_PARTIAL])
    assert transcript.apply(_resumed(0, 2)) is True
    assert (transcript.nodes, transcript.text(), transcript.attempt) == ([], "", 2)


def test_a_resume_that_supersedes_nothing_returns_false() -> None:
    transcript = Transcript()
    _fold(transcript, [BEGIN, *NODE_0])
    assert transcript.apply(_resumed(1, 2)) is False
    assert (transcript.text(), transcript.attempt) == ("Hello", 2)
    assert Transcript().apply(_resumed(0, 3)) is False


def test_a_delta_of_a_part_never_seen_is_ignored() -> None:
    transcript = Transcript()  # a listener that resumed after a cursor: the part's start came before it
    assert transcript.apply(_delta(0, 0, "lo")) is False
    assert transcript.apply(_delta(2, 5, "lo")) is False
    assert (transcript.nodes, transcript.text()) == ([], "")
    _fold(transcript, [_begin(0), _delta(0, 3, "x")])
    assert [node.parts for node in transcript.nodes] == [[]]


def test_parts_follow_event_idx_and_a_part_sent_again_replaces_it() -> None:
    transcript = Transcript()
    _fold(transcript, [_begin(0), _text(0, 1, "second"), _text(0, 0, "first "), _delta(0, 1, "!")])
    assert transcript.text() == "first second!"
    transcript.apply(_text(0, 1, "again"))
    assert transcript.text() == "first again"


def test_tool_returns_come_after_the_response_parts_in_arrival_order_with_their_outcome() -> None:
    transcript = Transcript()
    retried = _event(
        idx=0,
        kind=pb.EVENT_KIND_PART_START,
        part_kind=pb.PART_KIND_TOOL_RETURN,
        part_kind_name="tool-return",
        content="no such city",
        outcome=pb.TOOL_OUTCOME_RETRIED,
    )
    prompt = _event(idx=0, kind=pb.EVENT_KIND_PART_START, part_kind=pb.PART_KIND_OTHER, part_kind_name="retry-prompt")
    _fold(transcript, [_begin(0), retried, prompt, _text(0, 0, "late")])
    [node] = transcript.nodes
    assert [(p.part_kind_name, p.event_idx, p.outcome) for p in node.parts] == [
        ("text", 0, pb.TOOL_OUTCOME_UNSPECIFIED),
        ("tool-return", None, pb.TOOL_OUTCOME_RETRIED),
        ("retry-prompt", None, pb.TOOL_OUTCOME_UNSPECIFIED),
    ]


def test_error_end_begin_and_custom_events_touch_no_node() -> None:
    transcript = Transcript()
    _fold(transcript, [_begin(0), _text(0, 0, "Hi")])
    custom = pb.Event(type=pb.EVENT_TYPE_CUSTOM, type_name="progress", origin="developer", body_json='{"pct": 50}')
    error = pb.Event(
        type=pb.EVENT_TYPE_ERROR, type_name="error", origin="pydantic-ai-stream", body_json='{"msg": "canceled"}'
    )
    assert _fold(transcript, [BEGIN, custom, error, END]) == [False] * 4
    assert (transcript.text(), transcript.error, transcript.ended, transcript.attempt) == (
        "Hi",
        {"msg": "canceled"},
        True,
        1,
    )
