"""The web edge's pure part: entries back to pydantic-ai events, the chunk cursors, and the encoding through
pydantic-ai's UI event streams, resumed from every cursor of a run (no I/O)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from ag_ui.core import Event as AGUIEvent
from pydantic import TypeAdapter
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.run import AgentRunResultEvent
from pydantic_ai.tools import DeferredToolRequests

from pydantic_ai_stream import InvalidIdError
from pydantic_ai_stream._core.entry import Entry
from pydantic_ai_stream._edges.web.encode import AGUI, VERCEL_AI, Chunk, WebProtocol, chunks
from pydantic_ai_stream._edges.web.events import EntryEvents, RunFailedError, WebCursor

STREAM = "pydantic-ai-stream"


def _entries(*items: tuple[str, dict[str, Any]] | dict[str, Any], origin: str = "pydantic-ai") -> list[Entry]:
    """Entries with ids `100-0`, `100-1`, ...: a `(type, body)` pair, or an `event` body."""
    entries = []
    for n, item in enumerate(items):
        kind, body = item if isinstance(item, tuple) else ("event", item)
        entries.append(Entry(id=f"100-{n}", type=kind, origin=STREAM if kind != "event" else origin, body=body))
    return entries


def _run(*events: dict[str, Any], end: Iterable[tuple[str, dict[str, Any]]] = (("end", {}),)) -> list[Entry]:
    return _entries(("begin", {"run_id": "r1", "user_prompt": "hi"}), *events, *end)


TOOL_RUN = _run(
    {"idx": 0, "event": "llm-begin"},
    {"idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "thinking", "content": "Hm"},
    {"idx": 0, "event": "part_delta", "event_idx": 0, "part_kind": "thinking", "part_delta_kind": "thinking",
     "content_delta": "m."},
    {"idx": 0, "event": "part_start", "event_idx": 1, "part_kind": "tool-call", "tool_name": "count",
     "tool_call_id": "k1", "args": {"text": "a b"}},
    {"idx": 0, "event": "llm-end"},
    {"idx": 0, "event": "part_start", "part_kind": "tool-return", "tool_name": "count", "tool_call_id": "k1",
     "content": 2},
    {"idx": 1, "event": "llm-begin"},
    {"idx": 1, "event": "part_start", "event_idx": 0, "part_kind": "text", "content": "Two"},
    {"idx": 1, "event": "part_delta", "event_idx": 0, "part_kind": "text", "part_delta_kind": "text",
     "content_delta": " words."},
    {"idx": 1, "event": "llm-end"},
)  # fmt: skip

CALLS = [
    {"tool_call_id": "c1", "tool_name": "drop_db", "args": {"name": "x"}, "kind": "approval"},
    {"tool_call_id": "c2", "tool_name": "page", "args": {}, "kind": "external"},
]
WAITING_RUN = _run(
    {"idx": 0, "event": "llm-begin"},
    {"idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "tool-call", **CALLS[0]},
    {"idx": 0, "event": "part_start", "event_idx": 1, "part_kind": "tool-call", **CALLS[1]},
    {"idx": 0, "event": "llm-end"},
    {"idx": 0, "event": "input_required", "calls": CALLS, "deadline_ms": 1},
    {"idx": 0, "event": "part_start", "part_kind": "tool-return", "tool_name": "drop_db", "tool_call_id": "c1",
     "content": "dropped"},
    {"idx": 0, "event": "part_start", "part_kind": "tool-return", "tool_name": "page", "tool_call_id": "c2",
     "content": "paged"},
    {"idx": 1, "event": "llm-begin"},
    {"idx": 1, "event": "part_start", "event_idx": 0, "part_kind": "text", "content": "done"},
    {"idx": 1, "event": "llm-end"},
)  # fmt: skip


def _type(chunk: Chunk) -> str:
    return "[DONE]" if chunk.data == "[DONE]" else str(json.loads(chunk.data)["type"])


def _kinds(entries: list[Entry]) -> list[str]:
    mapper = EntryEvents()
    return [type(event).__name__ for entry in entries for event in mapper.of(entry)]


def test_a_runs_entries_become_the_events_pydantic_ai_streams() -> None:
    assert _kinds(TOOL_RUN) == [
        "PartStartEvent",  # thinking
        "PartDeltaEvent",
        "PartEndEvent",  # closed by the next part
        "PartStartEvent",  # the call, complete
        "PartEndEvent",
        "FunctionToolCallEvent",  # at the node's end, as its tool runs
        "FunctionToolResultEvent",
        "PartStartEvent",
        "PartDeltaEvent",
        "PartEndEvent",  # closed by the node's end
        "AgentRunResultEvent",
    ]


def test_a_wait_ends_with_the_deferred_requests_and_errors_raise_as_pydantic_ai_would() -> None:
    mapper = EntryEvents()
    events = [event for entry in WAITING_RUN[:6] for event in mapper.of(entry)]
    result = events[-1]
    assert isinstance(result, AgentRunResultEvent)
    assert isinstance(result.result.output, DeferredToolRequests)
    assert [c.tool_call_id for c in result.result.output.approvals] == ["c1"]
    assert [c.tool_call_id for c in result.result.output.calls] == ["c2"]
    [cancelled, failed, developers] = _entries(
        ("error", {"msg": "canceled"}), ("error", {"msg": "run lost"}), ("error", {"msg": "mine"})
    )
    with pytest.raises(RunCancelled):
        EntryEvents().of(cancelled)
    with pytest.raises(RunFailedError, match="run lost"):
        EntryEvents().of(failed)
    assert EntryEvents().of(Entry(id="1-0", type="error", origin="developer", body={"msg": "x"})) == []
    assert developers.origin == STREAM


@pytest.mark.parametrize(
    ("cursor", "has", "lacks"),
    [
        ("0", [], [("1-0", 0)]),
        ("5-0/2", [("4-9", 99), ("5-0", 0), ("5-0", 2)], [("5-0", 3), ("5-1", 0)]),
        ("5-0", [("5-0", 1000)], [("5-1", 0)]),
    ],
)
def test_a_cursor_has_every_chunk_up_to_its_own(cursor: str, has: list[Any], lacks: list[Any]) -> None:
    parsed = WebCursor.parse(cursor)
    assert all(parsed.has(*chunk) for chunk in has)
    assert not any(parsed.has(*chunk) for chunk in lacks)


@pytest.mark.parametrize("cursor", ["5-0/x", "5-0/", "5-0/-1", "abc", "5-0/1/2", "5-0/1234567890"])
def test_a_malformed_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidIdError):
        WebCursor.parse(cursor)


async def _aiter(entries: list[Entry]) -> AsyncIterator[Entry]:
    for entry in entries:
        yield entry


async def _chunks(entries: list[Entry], protocol: WebProtocol, after: str = "0") -> list[Chunk]:
    return [c async for c in chunks(_aiter(entries), protocol, session_id="s1", after=WebCursor.parse(after))]


@pytest.mark.parametrize("protocol", [VERCEL_AI, AGUI], ids=lambda p: p.name)
async def test_resuming_after_any_chunk_sends_exactly_the_rest(protocol: WebProtocol) -> None:
    whole = await _chunks(TOOL_RUN, protocol)
    assert len({chunk.id for chunk in whole}) == len(whole)
    for n, chunk in enumerate(whole):
        assert await _chunks(TOOL_RUN, protocol, chunk.id) == whole[n + 1 :], chunk.id
    assert await _chunks(TOOL_RUN, protocol) == whole  # ids and payloads derive from the stream: a replay is equal
    if protocol is AGUI:
        for chunk in whole:
            TypeAdapter(AGUIEvent).validate_json(chunk.data)


async def test_the_vercel_stream_has_the_ai_sdk_chunks_of_the_run() -> None:
    types = [_type(c) for c in await _chunks(TOOL_RUN, VERCEL_AI)]
    assert types == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-delta",
        "reasoning-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
        "[DONE]",
    ]


@pytest.mark.parametrize("protocol", [VERCEL_AI, AGUI], ids=lambda p: p.name)
async def test_a_waiting_run_is_two_responses_each_resumable(protocol: WebProtocol) -> None:
    first = await _chunks(WAITING_RUN, protocol)
    wait_id = WAITING_RUN[5].id
    assert first[-1].id.startswith(f"{wait_id}/")  # the first response ends at the wait
    second = await _chunks(WAITING_RUN, protocol, wait_id)  # what an answer streams: the continuation
    assert await _chunks(WAITING_RUN, protocol, first[-1].id) == second
    for n, chunk in enumerate(second):
        assert await _chunks(WAITING_RUN, protocol, chunk.id) == second[n + 1 :]
    if protocol is VERCEL_AI:
        approvals = [json.loads(c.data) for c in first if "tool-approval-request" in c.data]
        assert approvals == [{"type": "tool-approval-request", "approvalId": "c1", "toolCallId": "c1"}]
        assert json.loads(second[0].data) == json.loads(first[0].data)  # the same message goes on
    else:
        outcome = json.loads(first[-1].data)["outcome"]
        assert [i["toolCallId"] for i in outcome["interrupts"]] == ["c1"]


@pytest.mark.parametrize("protocol", [VERCEL_AI, AGUI], ids=lambda p: p.name)
async def test_a_cancelled_run_ends_as_the_protocol_says_a_cancel(protocol: WebProtocol) -> None:
    entries = _run(
        {"idx": 0, "event": "llm-begin"},
        {"idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "text", "content": "Par"},
        _text_delta(0, "ti"),
        _text_delta(0, "al"),
        end=(("error", {"msg": "canceled"}), ("end", {})),
    )
    whole = await _chunks(entries, protocol)
    for n, chunk in enumerate(whole):
        assert await _chunks(entries, protocol, chunk.id) == whole[n + 1 :]
    types = [_type(c) for c in whole]
    if protocol is VERCEL_AI:
        assert types[-4:] == ["text-end", "abort", "finish-step", "[DONE]"]
    else:
        assert types[-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert await _chunks(entries, protocol, whole[-1].id) == []
    assert await _chunks(entries, protocol, entries[-1].id) == []


def _text_delta(idx: int, text: str) -> dict[str, Any]:
    return {"idx": idx, "event": "part_delta", "event_idx": 0, "part_kind": "text", "part_delta_kind": "text",
            "content_delta": text}  # fmt: skip


@pytest.mark.parametrize("protocol", [VERCEL_AI, AGUI], ids=lambda p: p.name)
async def test_a_run_resumed_by_another_worker_shows_what_the_dead_one_sent_once(protocol: WebProtocol) -> None:
    """The new attempt redoes node 1 (its call, its return, its text so far): only what goes beyond is sent."""
    call = {"part_kind": "tool-call", "tool_name": "count", "tool_call_id": "k1", "args": {}}
    back = {"idx": 0, "event": "part_start", "part_kind": "tool-return", "tool_name": "count", "tool_call_id": "k1",
            "content": 2}  # fmt: skip
    text = {"idx": 1, "event": "part_start", "event_idx": 0, "part_kind": "text", "content": "He"}
    entries = _run(
        {"idx": 0, "event": "llm-begin"},
        {"idx": 0, "event": "part_start", "event_idx": 0, **call},
        {"idx": 0, "event": "llm-end"},
        back,
        {"idx": 1, "event": "llm-begin"},
        text,
        _text_delta(1, "llo w"),
        {"idx": 0, "event": "resumed", "attempt": 2},
        {"idx": 0, "event": "llm-begin"},
        {"idx": 0, "event": "part_start", "event_idx": 0, **call},
        {"idx": 0, "event": "llm-end"},
        back,
        {"idx": 1, "event": "llm-begin"},
        text,
        _text_delta(1, "llo"),
        _text_delta(1, " wor"),
        _text_delta(1, "ld"),
        {"idx": 1, "event": "llm-end"},
    )
    whole = await _chunks(entries, protocol)
    types = [_type(c) for c in whole]
    texts = [json.loads(c.data)["delta"] for c in whole if _type(c) in ("text-delta", "TEXT_MESSAGE_CONTENT")]
    assert "".join(texts) == "Hello world"
    assert types.count("text-start" if protocol is VERCEL_AI else "TEXT_MESSAGE_START") in (1, 2)  # 2: AG-UI's call
    assert types.count("tool-input-start" if protocol is VERCEL_AI else "TOOL_CALL_START") == 1
    assert types.count("tool-output-available" if protocol is VERCEL_AI else "TOOL_CALL_RESULT") == 1
    for n, chunk in enumerate(whole):
        assert await _chunks(entries, protocol, chunk.id) == whole[n + 1 :]
