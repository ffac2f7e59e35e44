"""The web edge end to end (`serve --http-port`, in process): Vercel AI and AG-UI streams of real runs over httpx,
resumed by cursor on another replica of the same Redis, approvals answered over each protocol, cancel, auth."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import signal
import weakref
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import Event as AGUIEvent
from grpc_agents import paced
from pydantic import TypeAdapter
from test_grpc_process import serve_process, worker_process

from conftest import _free_port
from pydantic_ai_stream import Settings
from pydantic_ai_stream.server import RunningServer, ServerSettings, Worker, running_server

TOKENS = ["alice-token=1:1", "bob-token=1:2"]
ALICE = {"authorization": "Bearer alice-token"}
BOB = {"authorization": "Bearer bob-token"}
AGUI_EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)


def _config(redis_url: str, **update: Any) -> ServerSettings:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        http_port=0,
        agents={
            "paced": "grpc_agents:paced",
            "ops": "grpc_agents:ops",
            "weather": "grpc_agents:weather",
            "seeing": "grpc_agents:seeing_any",
        },
        tokens=TOKENS,
        shutdown_grace=0.5,
        heartbeat_interval=0.3,
    )
    return config.model_copy(update=update)


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test here makes the server log an error: bad requests, disconnects, cancels and stops are all expected."""
    yield
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    async with running_server(_config(redis_url), settings=settings) as running:
        yield running


@pytest.fixture
async def replica(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    """A second server on the same Redis that executes no runs: it only reads what the first one writes."""
    async with running_server(_config(redis_url, concurrency=0), settings=settings) as running:
        yield running


def _client(server: RunningServer, headers: dict[str, str] = ALICE) -> httpx.AsyncClient:
    assert server.http is not None
    return httpx.AsyncClient(base_url=server.http.url, headers=headers, timeout=30)


def _chat(session: str, text: str) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": session, "trigger": "submit-message", "messages": [message]}


def _run_input(thread: str, run: str, text: str = "", **more: Any) -> dict[str, Any]:
    messages = [{"id": "u1", "role": "user", "content": text}] if text else []
    return {"threadId": thread, "runId": run, "messages": messages, "tools": [], "context": [], **more}


_LINES: weakref.WeakKeyDictionary[httpx.Response, AsyncIterator[str]] = weakref.WeakKeyDictionary()
"""Each response's line reader, so a next `_events` call reads on (keyed by the response itself: an `id` is reused
once its response is gone, and a later response then got the earlier one's finished reader)."""


async def _events(response: httpx.Response, most: int | None = None) -> list[tuple[str, str]]:
    """The (id, data) of each SSE event of `response` (comments left out); after `most`, stop reading (a next
    call reads on)."""
    events: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    lines = _LINES.setdefault(response, response.aiter_lines())
    async for line in lines:
        if not line:
            if "data" in fields:
                events.append((fields.get("id", ""), fields["data"]))
                if most is not None and len(events) >= most:
                    return events
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events


async def _stream(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> list[tuple[str, str]]:
    async with client.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        return await _events(response)


def _types(events: list[tuple[str, str]]) -> list[str]:
    return [json.loads(data)["type"] if data != "[DONE]" else "[DONE]" for _, data in events]


def _text(events: list[tuple[str, str]]) -> str:
    chunks = [json.loads(data) for _, data in events if data != "[DONE]"]
    return "".join(c.get("delta", "") for c in chunks if c["type"] in ("text-delta", "TEXT_MESSAGE_CONTENT"))


@pytest.mark.parametrize(
    ("protocol", "start", "resume"),
    [
        ("vercel-ai", "/v1/agents/paced/vercel-ai/chat", "/v1/agents/paced/vercel-ai/chat/{session}/stream"),
        ("ag-ui", "/v1/agents/paced/ag-ui", "/v1/agents/paced/ag-ui/{session}/stream"),
    ],
)
async def test_a_stream_cut_mid_run_resumes_on_another_replica_without_loss_or_duplication(
    server: RunningServer, replica: RunningServer, protocol: str, start: str, resume: str
) -> None:
    session = f"cut-{protocol}"
    body = _chat(session, "count") if protocol == "vercel-ai" else _run_input(session, "run-cut", "count")
    async with _client(server) as client, _client(replica) as other:
        async with client.stream("POST", start, json=body) as response:
            assert response.status_code == 200
            first = await _events(response, most=12)  # then the client drops the connection
        url = resume.format(session=session)
        mid = await _stream(other, "GET", url, headers={"last-event-id": first[-1][0]})
        whole = await _stream(other, "GET", url, headers={"last-event-id": "0"})
        after_end = await _stream(other, "GET", url, params={"after": mid[-1][0]})
    assert first + mid == whole
    assert len({event_id for event_id, _ in whole}) == len(whole)
    assert _text(whole) == "".join(f"t{i} " for i in range(40))
    assert after_end == []
    if protocol == "vercel-ai":
        assert _types(whole)[:2] == ["start", "start-step"]
        assert _types(whole)[-2:] == ["finish", "[DONE]"]
    else:
        for _, data in whole:
            AGUI_EVENTS.validate_json(data)  # the AG-UI SDK's own event types
        assert _types(whole)[0] == "RUN_STARTED"
        assert _types(whole)[-1] == "RUN_FINISHED"


async def test_a_resume_without_cursor_streams_the_run_from_its_start_and_a_session_without_one_is_204(
    server: RunningServer,
) -> None:
    async with _client(server) as client:
        whole = await _stream(client, "POST", "/v1/agents/weather/vercel-ai/chat", json=_chat("nocursor", "hi"))
        again = await _stream(client, "GET", "/v1/agents/weather/vercel-ai/chat/nocursor/stream")
        none = await client.get("/v1/agents/weather/vercel-ai/chat/never-ran/stream")
    assert again == whole
    assert "tool-output-available" in _types(whole)
    assert _text(whole) == "It is sunny."
    assert none.status_code == 204


async def test_a_disconnect_does_not_cancel_and_cancel_ends_the_run_canceled_with_its_partial_conversation(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with _client(server) as client:
        async with client.stream("POST", "/v1/agents/paced/vercel-ai/chat", json=_chat("stop", "go")) as response:
            await _events(response, most=6)
        rest = await _stream(client, "GET", "/v1/agents/paced/vercel-ai/chat/stop/stream", params={"after": "0"})
        assert _types(rest)[-2:] == ["finish", "[DONE]"]  # the disconnect left the run running to its end
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # it ended quietly

        async with client.stream("POST", "/v1/agents/paced/vercel-ai/chat", json=_chat("stop", "again")) as response:
            events = await _events(response, most=6)
            cancelled = await client.post("/v1/agents/paced/sessions/stop/cancel")
            events += await _events(response)
        assert cancelled.json() == {"cancelled": True}
        assert _types(events)[-3:] == ["abort", "finish-step", "[DONE]"]
        history = (await client.get("/v1/agents/paced/sessions/stop/messages")).json()
    assert history["active"] is None
    texts = [p["text"] for m in history["messages"] if m["role"] == "assistant" for p in m["parts"] if "text" in p]
    assert len(texts) == 2
    assert texts[0].startswith("t0 ")
    assert 0 < len(texts[1]) < len(texts[0])


async def test_the_history_of_a_session_with_a_live_run_shows_its_prompt_once(server: RunningServer) -> None:
    """A page opened while a run streams (a second tab) shows the prompt that started it: the conversation store
    holds it only once the run ends; then it is there once."""
    history = "/v1/agents/paced/sessions/live-prompt/messages"
    async with _client(server) as client:
        chat = _chat("live-prompt", "go on")
        async with client.stream("POST", "/v1/agents/paced/vercel-ai/chat", json=chat) as response:
            await _events(response, most=6)  # the run streams
            vercel = (await client.get(history)).json()
            agui = (await client.get(history, params={"format": "ag-ui"})).json()
            await client.post("/v1/agents/paced/sessions/live-prompt/cancel")
            await _events(response)
        ended = (await client.get(history)).json()
    assert [(m["role"], m["parts"]) for m in vercel["messages"]] == [("user", [{"type": "text", "text": "go on"}])]
    assert vercel["active"] == "0"
    assert [(m["role"], m["content"]) for m in agui["messages"]] == [("user", "go on")]
    assert ended["active"] is None
    prompts = [p["text"] for m in ended["messages"] if m["role"] == "user" for p in m["parts"] if "text" in p]
    assert prompts == ["go on"]


async def test_an_approval_answered_over_vercel_ai_continues_the_run_in_the_same_message(
    server: RunningServer,
) -> None:
    async with _client(server) as client:
        first = await _stream(client, "POST", "/v1/agents/ops/vercel-ai/chat", json=_chat("approve-v", "drop it"))
        assert "tool-approval-request" in _types(first)
        assert _types(first)[-1] == "[DONE]"
        pending = (await client.get("/v1/agents/ops/sessions/approve-v/pending")).json()
        assert [c["tool_call_id"] for c in pending["calls"]] == ["c1", "c2"]
        start = json.loads(first[0][1])
        assistant = {
            "id": start["messageId"],
            "role": "assistant",
            "parts": [
                {
                    "type": "tool-drop_db",
                    "toolCallId": "c1",
                    "state": "approval-responded",
                    "input": {"name": "staging"},
                    "approval": {"id": "c1", "approved": True},
                },
                {
                    "type": "tool-page",
                    "toolCallId": "c2",
                    "state": "output-available",
                    "input": {"msg": "db"},
                    "output": "paged",
                },
            ],
        }
        answer = {**_chat("approve-v", "drop it"), "trigger": "submit-message"}
        answer["messages"] = [*answer["messages"], assistant]
        rest = await _stream(client, "POST", "/v1/agents/ops/vercel-ai/chat", json=answer)
        again = await client.post("/v1/agents/ops/vercel-ai/chat", json=answer)
    assert json.loads(rest[0][1]) == start  # the continuation extends the same assistant message
    assert _text(rest) == "done: drop_db=dropped staging; page=paged"
    assert again.status_code == 409
    assert again.json()["error"]


async def test_an_interrupt_resumed_over_ag_ui_continues_the_run(server: RunningServer) -> None:
    async with _client(server) as client:
        first = await _stream(client, "POST", "/v1/agents/ops/ag-ui", json=_run_input("approve-a", "a1", "drop it"))
        finished = json.loads(first[-1][1])
        [interrupt] = finished["outcome"]["interrupts"]
        resume = [{"interruptId": interrupt["id"], "status": "resolved", "payload": {"approved": False}}]
        tool = {"id": "t1", "role": "tool", "toolCallId": "c2", "content": '"paged"'}
        body = _run_input("approve-a", "a2", resume=resume, messages=[tool])
        rest = await _stream(client, "POST", "/v1/agents/ops/ag-ui", json=body)
    for _, data in first + rest:
        AGUI_EVENTS.validate_json(data)
    assert _types(rest)[0] == "RUN_STARTED"
    assert _types(rest)[-1] == "RUN_FINISHED"
    assert _text(rest).startswith("done: drop_db=")
    assert "page=paged" in _text(rest)


async def test_callers_are_authenticated_and_see_only_their_own_sessions(server: RunningServer) -> None:
    async with _client(server) as alice, _client(server, BOB) as bob, _client(server, {}) as nobody:
        await _stream(alice, "POST", "/v1/agents/weather/vercel-ai/chat", json=_chat("mine", "hi"))
        refused = await nobody.post("/v1/agents/weather/vercel-ai/chat", json=_chat("x", "hi"))
        wrong = await nobody.get("/v1/agents", headers={"authorization": "Bearer nope"})
        other = await bob.get("/v1/agents/weather/vercel-ai/chat/mine/stream", params={"after": "0"})
        cancel = await bob.post("/v1/agents/weather/sessions/mine/cancel")
        agents = await alice.get("/v1/agents")
    assert refused.status_code == 401
    assert "error" in refused.json()
    assert wrong.status_code == 401
    assert other.status_code == 404
    assert "error" in other.json()
    assert cancel.json() == {"cancelled": False}
    assert {"ops", "paced", "weather"} <= {agent["name"] for agent in agents.json()["agents"]}


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("POST", "/v1/agents/weather/vercel-ai/chat", {"messages": "no"}, 400),
        ("POST", "/v1/agents/weather/vercel-ai/chat", {"id": "s", "trigger": "submit-message", "messages": []}, 400),
        ("POST", "/v1/agents/weather/ag-ui", {"threadId": 3}, 400),
        ("POST", "/v1/agents/nobody/vercel-ai/chat", _chat("s", "hi"), 404),
        ("POST", "/v1/agents/weather/vercel-ai/chat", _chat("bad:id", "hi"), 400),
        ("GET", "/v1/agents/weather/vercel-ai/chat/s/stream?after=nope", None, 400),
        ("GET", "/v1/agents/weather/sessions/s/messages?format=xml", None, 400),
        ("POST", "/v1/agents/weather/ag-ui", _run_input("s", "r", resume=[]), 400),
    ],
)
async def test_bad_requests_are_refused_with_a_clear_error(
    server: RunningServer, method: str, url: str, body: Any, status: int
) -> None:
    async with _client(server) as client:
        response = await client.request(method, url, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


async def test_an_expired_or_future_cursor_is_refused_before_the_stream_starts(server: RunningServer) -> None:
    async with _client(server) as client:
        await _stream(client, "POST", "/v1/agents/weather/vercel-ai/chat", json=_chat("cursors", "hi"))
        url = "/v1/agents/weather/vercel-ai/chat/cursors/stream"
        ahead = await client.get(url, params={"after": "99999999999999-0"})
    assert ahead.status_code == 416
    assert ahead.json()["error"]


NODE_WEB = Path(__file__).parent.parent / "node_web"


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_WEB / "node_modules" / "ai").is_dir(),
    reason="needs node and `npm ci --prefix tests/node_web` (.ci/run does both)",
)
async def test_the_ai_sdk_reads_sends_reconnects_and_answers_approvals_with_its_own_transport(
    server: RunningServer,
) -> None:
    """`DefaultChatTransport` (what `useChat` uses) and `readUIMessageStream`, the `ai` package's own code, against
    the endpoint: a run, a reconnect, an approval and an external result, and a stream resumed mid-run."""
    assert server.http is not None
    node = await asyncio.create_subprocess_exec(
        "node", str(NODE_WEB / "conformance.mjs"), server.http.url, "alice-token", stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(node.communicate(), timeout=120)
    assert node.returncode == 0, err.decode()
    seen = json.loads(out)
    forty = "".join(f"t{i} " for i in range(40))
    assert [p.get("text") for p in seen["streamed"]["parts"]] == [None, forty]
    assert seen["reconnected"] == seen["streamed"]
    assert seen["resumed"]["parts"] == seen["streamed"]["parts"]
    drop, page = seen["waiting"]["parts"][1:]
    assert (drop["state"], drop["approval"]) == ("approval-requested", {"id": "c1"})
    assert page["state"] == "input-available"
    assert seen["continued"]["id"] == seen["waiting"]["id"]
    assert seen["continued"]["parts"][-1]["text"] == "done: drop_db=dropped staging; page=paged"
    assert seen["continued"]["parts"][1]["output"] == "dropped staging"


async def test_a_stream_whose_worker_is_killed_mid_answer_shows_the_resumed_run_once(
    redis_url: str, settings: Settings
) -> None:
    """kill -9 of the worker mid-answer: another resumes the run (redoing its node), and the open HTTP stream and a
    replay show every token once, in one text block."""
    short = Settings(redis_prefix=settings.redis_prefix, lease_ttl=1.5, lease_renew_interval=0.1)
    agent = ("--agent", "paced=grpc_agents:paced", "--no-demo", "--grace", "0.2")
    env = {"PYDANTIC_AI_STREAM_LEASE_TTL": "1.5", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1"}
    async with running_server(_config(redis_url, concurrency=0), settings=short) as api, _client(api) as client:
        with worker_process(redis_url, short.redis_prefix, *agent, env=env) as first:
            async with client.stream("POST", "/v1/agents/paced/vercel-ai/chat", json=_chat("killed", "go")) as response:
                events = []
                while "t5 " not in _text(events):
                    more = await _events(response, most=1)
                    assert more, f"the stream ended before t5: {events}"
                    events += more
                first.send_signal(signal.SIGKILL)
                async with Worker(runtime=api.servicer.runtime, agents={"paced": paced}):
                    events += await _events(response)
        replay = await _stream(client, "GET", "/v1/agents/paced/vercel-ai/chat/killed/stream", params={"after": "0"})
    assert _text(events) == "".join(f"t{i} " for i in range(40))
    assert _types(events).count("text-start") == 1
    assert replay == events


async def test_a_prompts_files_reach_the_model_over_each_protocol(server: RunningServer) -> None:
    hello = base64.b64encode(b"hello").decode()
    chat = _chat("files-v", "look")
    chat["messages"][0]["parts"] += [
        {"type": "file", "mediaType": "text/plain", "filename": "hi.txt", "url": f"data:text/plain;base64,{hello}"},
        {"type": "file", "mediaType": "image/png", "url": "https://example.com/a.png"},
    ]
    content = [
        {"type": "text", "text": "look"},
        {"type": "document", "source": {"type": "data", "value": hello, "mimeType": "text/plain"}},
    ]
    run_input = _run_input("files-a", "fa", messages=[{"id": "u1", "role": "user", "content": content}])
    bad = _chat("files-bad", "look")
    bad["messages"][0]["parts"].append({"type": "file", "mediaType": "text/plain", "url": "data:text/plain,hello"})
    async with _client(server) as client:
        vercel = _text(await _stream(client, "POST", "/v1/agents/seeing/vercel-ai/chat", json=chat))
        agui = _text(await _stream(client, "POST", "/v1/agents/seeing/ag-ui", json=run_input))
        refused = await client.post("/v1/agents/seeing/vercel-ai/chat", json=bad)
    assert "text=look\nbinary=text/plain:5:hi.txt\nimage-url=image/png:https://example.com/a.png\n" in vercel
    assert "text=look\nbinary=text/plain:5:" in agui
    assert refused.status_code == 400
    assert "base64" in refused.json()["error"]


async def test_history_comes_from_where_the_server_keeps_conversations(
    redis_url: str, settings: Settings, postgres_url: str, postgres_schema: str
) -> None:
    """`--sessions postgresql://...`: the messages route reads the conversation the worker saved there."""
    config = _config(redis_url, sessions=postgres_url, sessions_schema=postgres_schema)
    async with running_server(config, settings=settings) as running, _client(running) as client:
        await _stream(client, "POST", "/v1/agents/weather/vercel-ai/chat", json=_chat("in-pg", "weather?"))
        vercel = (await client.get("/v1/agents/weather/sessions/in-pg/messages")).json()
        agui = (await client.get("/v1/agents/weather/sessions/in-pg/messages", params={"format": "ag-ui"})).json()
    assert vercel["messages"][0]["parts"] == [{"type": "text", "text": "weather?", "state": "done"}]
    assert vercel["messages"][-1]["parts"][-1]["text"] == "It is sunny."
    assert agui["messages"][0]["role"] == "user"
    assert agui["messages"][-1]["content"] == "It is sunny."
    assert (vercel["active"], vercel["pending"]) == (None, [])


async def test_a_replica_that_stops_ends_its_streams_and_the_client_resumes_on_another(
    redis_url: str, settings: Settings
) -> None:
    """A rolling deploy: the replica serving the stream stops; its stream ends (not cut), the run goes on (here
    or on the other replica's worker), and the client resumes after its last id on the other: every token once."""
    url = "/v1/agents/paced/vercel-ai/chat"
    async with (
        running_server(_config(redis_url), settings=settings) as other,
        _client(other) as resuming,
        httpx.AsyncClient(headers=ALICE, timeout=30) as client,
    ):
        async with running_server(_config(redis_url), settings=settings) as first:
            assert first.http is not None
            request = client.build_request("POST", first.http.url + url, json=_chat("deploy", "go"))
            response = await client.send(request, stream=True)
            events = await _events(response, most=10)
            reading = asyncio.create_task(_events(response))
        events += await asyncio.wait_for(reading, 10)  # the stream ended with the server: not cut, not raised
        await response.aclose()
        events += await _stream(resuming, "GET", f"{url}/deploy/stream", headers={"last-event-id": events[-1][0]})
        replay = await _stream(resuming, "GET", f"{url}/deploy/stream", params={"after": "0"})
    assert _text(events) == "".join(f"t{i} " for i in range(40))
    assert events == replay


async def test_a_stream_resumes_on_a_serve_process_of_the_same_redis(
    server: RunningServer, redis_url: str, settings: Settings
) -> None:
    """The replica is another OS process (`pydantic-ai-stream serve --http-port`): nothing of a stream is kept in
    the memory of the process that started it."""
    port = _free_port()
    args = ("--http-port", str(port), "--agent", "paced=grpc_agents:paced", "--token", "alice-token=1:1")
    url = "/v1/agents/paced/vercel-ai/chat"
    assert server.http is not None
    with serve_process(redis_url, settings.redis_prefix, *args):
        async with (
            _client(server) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ALICE, timeout=30) as other,
        ):
            async with client.stream("POST", url, json=_chat("process", "go")) as response:
                first = await _events(response, most=8)
            rest = await _stream(other, "GET", f"{url}/process/stream", headers={"last-event-id": first[-1][0]})
            after_end = await _stream(other, "GET", f"{url}/process/stream", params={"after": rest[-1][0]})
            whole = await _stream(other, "GET", f"{url}/process/stream", params={"after": "0"})
    assert first + rest == whole
    assert after_end == []
    assert _text(whole) == "".join(f"t{i} " for i in range(40))
