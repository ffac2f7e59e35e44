"""How a resumed run goes on: checkpoint encoding, the tool rule, a run already saved (no I/O)."""

from __future__ import annotations

from pydantic_ai import Agent, BinaryContent
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.test import TestModel

from pydantic_ai_stream import RETRY_SAFE, UNKNOWN_OUTCOME, EventMapper
from pydantic_ai_stream._core.messages import decode_messages
from pydantic_ai_stream._durable.checkpoint import Checkpoint, encode_messages, saved_by, saved_nodes


def test_a_checkpoint_keeps_any_message_as_it_was_even_binary_content() -> None:
    messages = [
        ModelRequest(parts=[UserPromptPart(["look", BinaryContent(data=b"\xff\x00\xfe", media_type="image/png")])]),
        ModelResponse(parts=[TextPart("a picture")], run_id="r1"),
    ]
    stored = ModelMessagesTypeAdapter.validate_json(ModelMessagesTypeAdapter.dump_json(messages))
    assert decode_messages(encode_messages(messages)) == stored, "as a stored conversation keeps them"
    assert stored[0].parts[0].content[1].data == b"\xff\x00\xfe"  # type: ignore[union-attr,index]


def test_an_interrupted_tool_batch_reruns_only_tools_safe_to_retry_and_output_tools() -> None:
    agent = Agent(TestModel(), output_type=int)

    @agent.tool_plain
    def book(what: str) -> str:
        return what

    @agent.tool_plain(metadata={RETRY_SAFE: True})
    def lookup(what: str) -> str:
        return what

    response = ModelResponse(
        parts=[
            TextPart("checking"),
            ToolCallPart("book", {"what": "x"}, tool_call_id="b"),
            ToolCallPart("lookup", {"what": "y"}, tool_call_id="l"),
            ToolCallPart("final_result", {"response": 1}, tool_call_id="f"),
            ToolCallPart("gone", {}, tool_call_id="g"),
        ]
    )
    checkpoint = Checkpoint(idx=0, messages=[ModelRequest(parts=[UserPromptPart("go")]), response])
    assert checkpoint.interrupted is response
    results = checkpoint.tool_results(agent)
    assert results is not None
    assert results.approvals == {"l": True, "f": True}
    assert results.calls == {"b": UNKNOWN_OUTCOME, "g": UNKNOWN_OUTCOME}, "unknown tools count as not safe"
    after_tools = Checkpoint(idx=1, messages=[*checkpoint.messages, ModelRequest(parts=[UserPromptPart("more")])])
    assert after_tools.interrupted is None
    assert after_tools.tool_results(agent) is None


def test_a_conversation_saved_by_any_attempt_of_a_run_is_told_apart() -> None:
    saved = [ModelRequest(parts=[UserPromptPart("hi")], run_id="r1:2")]
    assert saved_by(saved, "r1")
    assert not saved_by(saved, "r")
    assert not saved_by([ModelRequest(parts=[UserPromptPart("hi")], run_id="r10")], "r1")


def test_a_saved_runs_nodes_replay_with_their_tool_returns_across_attempts() -> None:
    """What a resumed attempt streams again for a run its last worker saved before `end`: each node of the run
    (not of another run), numbered from 0 across attempts, its tool returns after its `llm-end`."""
    messages = [
        ModelRequest(parts=[UserPromptPart("earlier")], run_id="r0"),
        ModelResponse(parts=[TextPart("an earlier answer")], run_id="r0"),
        ModelRequest(parts=[UserPromptPart("go")], run_id="r1"),
        ModelResponse(parts=[TextPart("checking"), ToolCallPart("lookup", {"q": 1}, tool_call_id="c1")], run_id="r1"),
        ModelRequest(parts=[ToolReturnPart("lookup", "soup", tool_call_id="c1")], run_id="r1:2"),
        ModelResponse(parts=[TextPart("soup it is")], run_id="r1:2"),
    ]
    nodes = saved_nodes(messages, "r1")
    assert [(response.parts[0].content, answer is not None) for response, answer in nodes] == [  # type: ignore[union-attr]
        ("checking", True),
        ("soup it is", False),
    ]
    response, answer = nodes[0]
    assert [(b["event"], b.get("part_kind")) for b in EventMapper().replay(0, response, answer)] == [
        ("llm-begin", None),
        ("part_start", "text"),
        ("part_start", "tool-call"),
        ("llm-end", None),
        ("part_start", "tool-return"),
    ]
