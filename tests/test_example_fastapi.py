"""`examples/fastapi_sse.py` through a real HTTP server (uvicorn) and a streaming HTTP client.

The example runs on the published API's default path (the process-wide `settings`), each test in a session of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from examples import fastapi_sse
from examples.fastapi_sse import ChatDeps, create_app
from fastapi import FastAPI
from pydantic_ai import Agent
from redis.asyncio import Redis

from pydantic_ai_stream import settings as process_settings
from support import scripted_model


def _agent(**model: Any) -> Agent[ChatDeps, str]:
    agent = Agent(scripted_model(**model), deps_type=ChatDeps)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    return agent


async def _serve(redis: Redis, agent: Agent[ChatDeps, str]) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _serve_app(create_app(redis, agent)):
        yield client


async def _serve_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # A socket already listening: requests wait in its backlog until uvicorn accepts them.
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=10) as client:
        yield client
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture
def session_id(default_session_id: str) -> str:
    """The test's session; the app's fixtures depend on it, so its keys are deleted once the app has stopped."""
    return default_session_id


@pytest.fixture
async def weather(redis: Redis, session_id: str) -> AsyncIterator[httpx.AsyncClient]:
    agent = _agent(tokens=["It is ", "sunny."], tool="get_weather", tool_args='{"city": "Paris"}')
    async for client in _serve(redis, agent):
        yield client


@pytest.fixture
async def stalling(redis: Redis, session_id: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _serve(redis, _agent(tokens=["one ", "two "], stall=True)):
        yield client


async def _iter_sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """SSE messages as `{"id", "event", "data"}`, with `data` parsed."""
    message: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in message:
                yield message
            message = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            message[name] = json.loads(value.strip()) if name == "data" else value.strip()


async def _sse(response: httpx.Response) -> list[dict[str, Any]]:
    return [message async for message in _iter_sse(response)]


async def _chat(client: httpx.AsyncClient, session_id: str, prompt: str) -> list[dict[str, Any]]:
    async with client.stream("POST", "/chat", json={"prompt": prompt, "session_id": session_id}) as response:
        assert response.status_code == 200
        return await _sse(response)


async def test_chat_streams_the_run_with_sse_ids(weather: httpx.AsyncClient, session_id: str) -> None:
    messages = await _chat(weather, session_id, "weather?")
    assert messages[0]["event"] == "begin"
    assert messages[-1]["event"] == "end"
    assert all(m["id"] == m["data"]["id"] for m in messages)
    bodies = [m["data"]["body"] for m in messages if m["event"] == "event"]
    [call] = [b for b in bodies if b.get("part_kind") == "tool-call"]
    assert call["args"] == {"city": "Paris"}
    assert any(b.get("part_kind") == "tool-return" and b["content"] == "sunny in Paris" for b in bodies)
    assert "".join(
        b.get("content", "") + b.get("content_delta", "") for b in bodies if b.get("part_kind") == "text"
    ) == ("It is sunny.")


async def test_last_event_id_resumes_with_nothing_lost_or_repeated(weather: httpx.AsyncClient, session_id: str) -> None:
    full = await _chat(weather, session_id, "weather?")
    for k in (0, 4):
        headers = {"Last-Event-ID": full[k]["id"]}
        async with weather.stream("GET", f"/chat/{session_id}/events", headers=headers) as response:
            assert response.status_code == 200
            assert await _sse(response) == full[k + 1 :]
    ended = await weather.get(f"/chat/{session_id}/events", headers={"Last-Event-ID": full[-1]["id"]})
    assert ended.status_code == 204, "after `end`: the browser stops reconnecting"
    ahead = await weather.get(f"/chat/{session_id}/events", headers={"Last-Event-ID": "99999999999999-0"})
    assert ahead.status_code == 422


async def test_cancel_ends_the_stream_with_error_then_end(stalling: httpx.AsyncClient, session_id: str) -> None:
    async with stalling.stream("POST", "/chat", json={"prompt": "go", "session_id": session_id}) as response:
        seen = []
        async for message in _iter_sse(response):
            seen.append(message)
            if message["data"]["body"].get("content_delta") == "two ":
                assert (await stalling.post(f"/chat/{session_id}/cancel")).json() == {"cancelled": True}
            if message["event"] == "end":
                break
    assert [(m["event"], m["data"]["body"].get("msg")) for m in seen[-2:]] == [("error", "canceled"), ("end", None)]
    assert (await stalling.post(f"/chat/{session_id}/cancel")).json() == {"cancelled": False}


async def test_a_second_chat_on_a_running_session_is_409(stalling: httpx.AsyncClient, session_id: str) -> None:
    async with stalling.stream("POST", "/chat", json={"prompt": "go", "session_id": session_id}) as first:
        messages = _iter_sse(first)
        async for message in messages:
            if message["event"] == "begin":
                break
        second = await stalling.post("/chat", json={"prompt": "again", "session_id": session_id})
        assert second.status_code == 409
        assert "already has a live run" in second.json()["detail"]
        await stalling.post(f"/chat/{session_id}/cancel")
        assert [message["event"] async for message in messages][-1] == "end"  # ended, before its keys go


async def test_bad_ids_are_refused_and_nothing_is_written(weather: httpx.AsyncClient, redis: Redis) -> None:
    # The prefix is shared: other tests' keys may be there, and expire meanwhile.
    before = {k async for k in redis.scan_iter(f"{process_settings.redis_prefix}*")}
    response = await weather.post("/chat", json={"prompt": "hi", "session_id": "a:b"})
    assert response.status_code == 422
    assert "session_id" in response.json()["detail"]
    assert (await weather.get("/chat/a*b/events")).status_code == 422
    assert {k async for k in redis.scan_iter(f"{process_settings.redis_prefix}*")} <= before


async def test_history_and_unknown_sessions(weather: httpx.AsyncClient, session_id: str) -> None:
    await _chat(weather, session_id, "weather?")
    nodes = (await weather.get(f"/chat/{session_id}/history")).json()
    parts = [p for node in nodes for p in node["parts"]]
    assert {"part_kind": "user-prompt", "content": "weather?"} in parts
    assert any(p["part_kind"] == "tool-call" and p["args"] == {"city": "Paris"} for p in parts)
    assert (await weather.get("/chat/never/events", params={"wait": 1})).status_code == 404


@pytest.mark.e2e
async def test_the_app_without_redis_url_runs_on_an_embedded_redis(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`uvicorn examples.fastapi_sse:app` with no `REDIS_URL` starts a Redis of its own, as `serve` does."""
    for name in ("REDIS_URL", "PYDANTIC_AI_STREAM_REDIS_URL", "MODEL"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.INFO, logger="pydantic_ai_stream")
    async for client in _serve_app(fastapi_sse.app):
        messages = await _chat(client, "embedded", "weather?")
        assert "no REDIS_URL given: started an embedded Redis" in caplog.text
        assert [messages[0]["event"], messages[-1]["event"]] == ["begin", "end"]
        assert not [m for m in messages if m["event"] == "error"]
        nodes = (await client.get("/chat/embedded/history")).json()
        assert {"part_kind": "user-prompt", "content": "weather?"} in [p for node in nodes for p in node["parts"]]
