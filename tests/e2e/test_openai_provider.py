"""pydantic-ai's real OpenAI client (httpx + openai SDK + its stream parsing) against a local Chat Completions server.

The server is a real HTTP server (uvicorn + Starlette) in the test's own event loop. It scripts the model: the
first request streams a `get_weather` tool call whose arguments arrive in pieces, the second (which carries the
tool's result) streams the answer as text deltas.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from pydantic_ai_stream import Deps, RedisSession, Runtime, Session, run

MODEL = "gpt-4.1-mini"  # not deprecated by its provider (pydantic-ai warns of those), no reasoning (tools allowed)
CALL_ID = "call_w3Ath3rPar1s"
ARG_PIECES = ['{"ci', 'ty": "Par', 'is"}']
TEXT_PIECES = ["The weather ", "in Paris ", "is sunny."]
ANSWER = "".join(TEXT_PIECES)
DEADLINE = 10.0


@dataclass
class MyDeps(Deps):
    def get_scope_id(self) -> int:
        return 1


def make_agent(model: OpenAIChatModel) -> Agent[MyDeps, str]:
    agent = Agent(model, deps_type=MyDeps)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Get the weather in a city."""
        return f"sunny in {city}"

    return agent


def _chunk(completion_id: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _usage_chunk(completion_id: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "system_fingerprint": "fp_test",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _tool_call_chunks() -> Iterator[dict[str, Any]]:
    cid = "chatcmpl-tool"
    yield _chunk(cid, {"role": "assistant", "content": None})
    yield _chunk(
        cid,
        {
            "tool_calls": [
                {"index": 0, "id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        },
    )
    for piece in ARG_PIECES:
        yield _chunk(cid, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield _chunk(cid, {}, finish_reason="tool_calls")
    yield _usage_chunk(cid, 50, 12)


def _text_chunks() -> Iterator[dict[str, Any]]:
    cid = "chatcmpl-text"
    yield _chunk(cid, {"role": "assistant", "content": ""})
    for piece in TEXT_PIECES:
        yield _chunk(cid, {"content": piece})
    yield _chunk(cid, {}, finish_reason="stop")
    yield _usage_chunk(cid, 70, 8)


class ChatServer:
    """A scripted Chat Completions endpoint; keeps every request body it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])

    async def completions(self, request: Request) -> StreamingResponse:
        body = await request.json()
        self.requests.append(body)
        has_tool_result = any(m.get("role") == "tool" for m in body["messages"])
        chunks = _text_chunks() if has_tool_result else _tool_call_chunks()

        async def sse() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1 with a free port in this loop; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(DEADLINE):
            while not server.started:
                if task.done():
                    task.result()  # raises the startup failure
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, DEADLINE)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def test_openai_chat_model_streams_tool_call_and_answer_through_a_real_http_server(
    redis: Redis, runtime: Runtime
) -> None:
    started = time.monotonic()
    chat = ChatServer()
    async with serving(chat.app) as base_url:
        provider = OpenAIProvider(base_url=base_url, api_key="test")
        async with provider:
            agent = make_agent(OpenAIChatModel(MODEL, provider=provider))

            async def collect() -> list[dict[str, Any]]:
                listener = MyDeps(redis=redis, runtime=runtime, user_id=1, session_id="s1")
                return [e async for e in listener.listen(serialize=False)]  # type: ignore[misc]

            consumer = asyncio.create_task(collect())
            session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
            deps = MyDeps(redis=redis, runtime=runtime, user_id=1, session_id="s1")
            await asyncio.wait_for(run(session, agent, "What's the weather in Paris?", deps=deps), DEADLINE)
            events = await asyncio.wait_for(consumer, DEADLINE)

    # The server saw two streamed requests; the second carries the re-assembled call and the tool's result.
    assert len(chat.requests) == 2
    assert all(r["stream"] is True and r["model"] == MODEL for r in chat.requests)
    assert not any(m["role"] == "tool" for m in chat.requests[0]["messages"])
    assistant = next(m for m in chat.requests[1]["messages"] if m["role"] == "assistant")
    [sent_call] = assistant["tool_calls"]
    assert sent_call["id"] == CALL_ID
    assert sent_call["function"]["name"] == "get_weather"
    assert json.loads(sent_call["function"]["arguments"]) == {"city": "Paris"}
    tool_msg = next(m for m in chat.requests[1]["messages"] if m["role"] == "tool")
    assert tool_msg["tool_call_id"] == CALL_ID
    assert tool_msg["content"] == "sunny in Paris"

    # Envelope: begin ... end, every entry with an id, ids strictly increasing.
    assert events[0]["type"] == "begin"
    assert events[0]["body"]["session_id"] == "s1"
    assert events[0]["body"]["user_prompt"] == "What's the weather in Paris?"
    assert events[-1]["type"] == "end"
    assert [e["type"] for e in events[1:-1]] == ["event"] * (len(events) - 2), events
    assert all(e["origin"] == "pydantic-ai" for e in events[1:-1])
    ids = [_stream_id(e["id"]) for e in events]
    assert all(a < b for a, b in itertools.pairwise(ids)), ids

    bodies = [e["body"] for e in events[1:-1]]
    assert [b for b in bodies if b["event"] in ("llm-begin", "llm-end")] == [
        {"idx": 0, "event": "llm-begin"},
        {"idx": 0, "event": "llm-end"},
        {"idx": 1, "event": "llm-begin"},
        {"idx": 1, "event": "llm-end"},
    ]

    # Node 0: the tool call, announced once with its args re-assembled from the streamed pieces.
    [call] = [b for b in bodies if b.get("part_kind") == "tool-call"]
    assert call == {
        "idx": 0,
        "event": "part_start",
        "event_idx": call["event_idx"],
        "part_kind": "tool-call",
        "tool_name": "get_weather",
        "tool_call_id": CALL_ID,
        "args": {"city": "Paris"},
    }
    [ret] = [b for b in bodies if b.get("part_kind") == "tool-return"]
    assert ret == {
        "idx": call["idx"],
        "event": "part_start",
        "part_kind": "tool-return",
        "tool_name": "get_weather",
        "tool_call_id": CALL_ID,
        "content": "sunny in Paris",
    }
    # The return arrives after node 0's response ended and before node 1 begins.
    assert bodies.index(call) < bodies.index({"idx": 0, "event": "llm-end"}) < bodies.index(ret)
    assert bodies.index(ret) < bodies.index({"idx": 1, "event": "llm-begin"})

    # Node 1: the answer, streamed as text.
    text = [b for b in bodies if b.get("part_kind") == "text"]
    assert text, bodies
    assert all(b["idx"] == 1 for b in text)
    assert "".join(b.get("content", "") + b.get("content_delta", "") for b in text) == ANSWER
    assert sum(b["event"] == "part_delta" for b in text) >= 2  # it really streamed in pieces
    answers = [b for b in bodies if b["event"] == "answer"]
    assert answers == [{"idx": 1, "event": "answer"}]
    assert not any(b.get("idx") == 0 for b in text + answers)

    # The conversation was persisted: a fresh session reads it back.
    reloaded = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await reloaded.load()
    assert len(reloaded.msgs) == 4  # prompt, tool call, tool return, answer
    nodes = Session.nodes_from_msgs(reloaded.msgs)
    assert [n["idx"] for n in nodes] == [0, 1]
    assert all(n["model_name"] == MODEL for n in nodes)
    node0 = nodes[0]["parts"]
    assert node0[0] == {"part_kind": "user-prompt", "content": "What's the weather in Paris?"}
    [stored_call] = [p for p in node0 if p["part_kind"] == "tool-call"]
    assert stored_call["tool_name"] == "get_weather"
    assert stored_call["tool_call_id"] == CALL_ID
    assert stored_call["args"] == {"city": "Paris"}
    assert stored_call["event_idx"] == call["event_idx"]
    [stored_ret] = [p for p in node0 if p["part_kind"] == "tool-return"]
    assert stored_ret["content"] == "sunny in Paris"
    assert [p for p in nodes[1]["parts"] if p["part_kind"] == "text"] == [
        {"event_idx": 0, "part_kind": "text", "content": ANSWER}
    ]
    assert time.monotonic() - started < 5
