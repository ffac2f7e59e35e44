"""The pure mapping from pydantic-ai events and messages to stream bodies, and the bodies' types."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import Agent, ToolFailed
from pydantic_ai.messages import (
    FinalResultEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    OutputToolResultEvent,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)
from redis.asyncio import Redis

from pydantic_ai_stream import EventBodyTypeAdapter, EventMapper, Session, nodes_from_msgs, run
from support import MemorySession, ScopedDeps


def test_node_boundaries_number_nodes_from_zero() -> None:
    mapper = EventMapper()
    assert mapper.node_begin() == {"idx": 0, "event": "llm-begin"}
    assert mapper.node_end() == {"idx": 0, "event": "llm-end"}
    assert mapper.node_begin() == {"idx": 1, "event": "llm-begin"}


def test_text_and_thinking_parts() -> None:
    mapper = EventMapper()
    mapper.node_begin()
    assert mapper.event(PartStartEvent(index=0, part=ThinkingPart(content="hm"))) == {
        "idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "thinking", "content": "hm",
    }  # fmt: skip
    assert mapper.event(PartDeltaEvent(index=0, delta=ThinkingPartDelta(content_delta="m"))) == {
        "idx": 0, "event": "part_delta", "event_idx": 0, "part_kind": "thinking",
        "part_delta_kind": "thinking", "content_delta": "m",
    }  # fmt: skip
    # A signature-only thinking delta has nothing to show.
    assert mapper.event(PartDeltaEvent(index=0, delta=ThinkingPartDelta(signature_delta="sig"))) is None
    assert mapper.event(PartStartEvent(index=1, part=TextPart(content="Hel"))) == {
        "idx": 0, "event": "part_start", "event_idx": 1, "part_kind": "text", "content": "Hel",
    }  # fmt: skip
    assert mapper.event(PartDeltaEvent(index=1, delta=TextPartDelta(content_delta="lo")))["content_delta"] == "lo"  # type: ignore[index]
    assert mapper.event(PartEndEvent(index=1, part=TextPart(content="Hello"))) is None
    assert mapper.event(FinalResultEvent(tool_name=None, tool_call_id=None)) == {"idx": 0, "event": "answer"}


def test_tool_call_is_announced_once_with_its_complete_args() -> None:
    mapper = EventMapper()
    mapper.node_begin()
    assert mapper.event(PartStartEvent(index=0, part=ToolCallPart("get_weather", '{"ci', tool_call_id="c1"))) is None
    delta = ToolCallPartDelta(args_delta='ty": "Paris"}', tool_call_id="c1")
    assert mapper.event(PartDeltaEvent(index=0, delta=delta)) is None
    end = PartEndEvent(index=0, part=ToolCallPart("get_weather", '{"city": "Paris"}', tool_call_id="c1"))
    assert mapper.event(end) == {
        "idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "tool-call",
        "tool_name": "get_weather", "tool_call_id": "c1", "args": {"city": "Paris"},
    }  # fmt: skip


def test_tool_returns_belong_to_the_node_that_called_them() -> None:
    mapper = EventMapper()
    mapper.node_begin()
    call = ToolCallPart("get_weather", {"city": "Paris"}, tool_call_id="c1")
    assert mapper.event(FunctionToolCallEvent(call)) is None
    result = FunctionToolResultEvent(ToolReturnPart("get_weather", {"temp": 21}, tool_call_id="c1"))
    assert mapper.event(result) == {
        "idx": 0, "event": "part_start", "part_kind": "tool-return",
        "tool_name": "get_weather", "tool_call_id": "c1", "content": {"temp": 21},
    }  # fmt: skip
    # The output tool's return is the run's last event; the published package never emitted it.
    output = OutputToolResultEvent(ToolReturnPart("final_result", "Final result processed.", tool_call_id="c2"))
    assert mapper.event(output)["part_kind"] == "tool-return"  # type: ignore[index]
    retry = ToolReturnPart("get_weather", "unknown city", tool_call_id="c3", outcome="retried")
    assert mapper.event(FunctionToolResultEvent(retry)) == {
        "idx": 0, "event": "part_start", "part_kind": "tool-return", "tool_name": "get_weather",
        "tool_call_id": "c3", "content": "unknown city", "outcome": "retried",
    }  # fmt: skip


def test_unknown_events_carry_nothing() -> None:
    assert EventMapper().event(object()) is None


@dataclass(kw_only=True)
class Forecast:
    city: str
    sky: str


async def _thinks_calls_tools_then_answers(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls | DeltaThinkingCalls]:
    if len(messages) == 1:
        yield {0: DeltaThinkingPart(content="Paris, ")}
        yield {0: DeltaThinkingPart(content="in °C.")}
        yield "Checking "
        yield "the sky…"
        yield {2: DeltaToolCall(name="get_weather", json_args='{"ci', tool_call_id="c1")}
        yield {2: DeltaToolCall(json_args='ty": "Paris"}')}
        yield {3: DeltaToolCall(name="get_pressure", json_args="{}", tool_call_id="c2")}
        return
    yield {0: DeltaToolCall(name="final_result", json_args='{"city": "Paris", ', tool_call_id="c3")}
    yield {0: DeltaToolCall(json_args='"sky": "sunny"}')}


async def test_every_body_of_a_run_is_an_event_body_and_dumps_as_the_stream_holds_it(redis: Redis) -> None:
    agent = Agent(FunctionModel(stream_function=_thinks_calls_tools_then_answers), output_type=Forecast)

    @agent.tool_plain
    def get_weather(city: str) -> dict[str, Any]:
        return {"city": city, "temp": 21, "sky": "sunny"}

    @agent.tool_plain
    def get_pressure() -> int:
        raise ToolFailed("barometer offline")

    deps = ScopedDeps(redis=redis, user_id=1, session_id="typed")
    await run(MemorySession(session_id="typed"), agent, "weather in Paris?", deps)

    stored = [fields[b"body"] for _, fields in await redis.xrange(deps.key()) if fields[b"type"] == b"event"]
    bodies = [json.loads(body_json) for body_json in stored]
    for body, body_json in zip(bodies, stored, strict=True):
        assert EventBodyTypeAdapter.validate_json(body_json) == body  # nothing dropped, nothing converted
        assert EventBodyTypeAdapter.dump_json(body) == body_json
    # The run had every kind of body in it.
    seen = {(b["event"], b.get("part_kind"), b.get("outcome"), b.get("tool_name")) for b in bodies}
    assert {
        ("llm-begin", None, None, None), ("llm-end", None, None, None),
        ("part_start", "thinking", None, None), ("part_delta", "thinking", None, None),
        ("part_start", "text", None, None), ("part_delta", "text", None, None),
        ("part_start", "tool-call", None, "get_weather"), ("part_start", "tool-return", None, "get_weather"),
        ("part_start", "tool-return", "failed", "get_pressure"),
        ("part_start", "tool-call", None, "final_result"), ("part_start", "tool-return", None, "final_result"),
        ("answer", None, None, "final_result"),
    } <= seen  # fmt: skip
    [call] = [b for b in bodies if b.get("tool_call_id") == "c1" and b["part_kind"] == "tool-call"]
    assert call["args"] == {"city": "Paris"}  # streamed in two pieces


def _conversation() -> list[ModelRequest | ModelResponse]:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        ModelRequest(parts=[UserPromptPart("weather in Paris?")]),
        ModelResponse(
            parts=[
                TextPart("Let me check."),
                ToolCallPart("get_weather", {"city": "Paris"}, tool_call_id="c1"),
            ],
            model_name="m",
            timestamp=ts,
        ),
        ModelRequest(parts=[ToolReturnPart("get_weather", "sunny", tool_call_id="c1")]),
        ModelResponse(parts=[TextPart("It is sunny.")], model_name="m", timestamp=ts),
        ModelRequest(parts=[UserPromptPart("thanks")]),
        ModelResponse(parts=[TextPart("You're welcome.")], model_name="m", timestamp=ts),
    ]


def test_nodes_from_msgs_mirrors_the_live_shape() -> None:
    nodes = nodes_from_msgs(_conversation())
    assert [n["idx"] for n in nodes] == [0, 1, 2]
    assert nodes[0]["parts"] == [
        {"part_kind": "user-prompt", "content": "weather in Paris?"},
        {"event_idx": 0, "part_kind": "text", "content": "Let me check."},
        {"event_idx": 1, "part_kind": "tool-call", "tool_name": "get_weather", "tool_call_id": "c1",
         "args": {"city": "Paris"}},
        {"part_kind": "tool-return", "tool_name": "get_weather", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    assert nodes[1]["parts"] == [{"event_idx": 0, "part_kind": "text", "content": "It is sunny."}]
    assert nodes[2]["parts"][0] == {"part_kind": "user-prompt", "content": "thanks"}


def test_nodes_from_msgs_accepts_json_and_its_parsed_form() -> None:
    class Stored(Session):
        async def load(self) -> None: ...
        async def save(self) -> None: ...

    session = Stored(msgs=list(_conversation()))
    data = session.msgs_to_json()
    expected = nodes_from_msgs(session.msgs)
    assert Session.nodes_from_msgs(data) == expected
    assert Session.nodes_from_msgs(json.loads(data)) == expected
    assert session.get_user_prompt() == "weather in Paris?"
    other = Stored()
    other.msgs_from_json(data)
    assert other.msgs == session.msgs
    assert Stored().get_user_prompt() == "No title"
