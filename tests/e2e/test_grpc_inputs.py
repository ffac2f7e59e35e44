"""A run's inputs past its prompt over gRPC: the request context its hosted agent's deps get, and attachments
(bytes with a media type, or URLs) that follow the prompt's text; bounded, stored once, summarised in `begin`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_agents import SEEING_TOKENS
from pydantic_ai.messages import BinaryContent, DocumentUrl, ImageUrl, ModelRequest, UserPromptPart
from redis.asyncio import Redis
from test_grpc_process import worker_process

from pydantic_ai_stream import RedisSession, Settings
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, Worker, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import server_keys

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
CONTEXT = {"locale": "fr", "account": 42}
AGENTS = {"seeing": "grpc_agents:seeing", "seeing_any": "grpc_agents:seeing_any", "stalling": "grpc_agents:stalling"}
BOUNDS = {"max_context_bytes": 200, "max_attachments": 3, "max_attachment_bytes": 2000, "max_attachments_bytes": 3000}


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(redis_url=redis_url, port=0, agents=AGENTS, heartbeat_interval=0.3, **BOUNDS)
    async with running_server(config, settings=settings) as running:
        yield running


def _client(server: RunningServer) -> StreamClient:
    return StreamClient(f"127.0.0.1:{server.port}")


async def _events(client: StreamClient, session_id: str) -> list[pb.Event]:
    return [event async for event in client.listen(session_id, timeout_seconds=30)]


def _text(events: list[pb.Event]) -> str:
    """The run's text, from its last `resumed` marker on (what the run's last attempt said)."""
    start = max((n for n, e in enumerate(events) if e.kind == pb.EVENT_KIND_RESUMED), default=0)
    return "".join(e.content + e.content_delta for e in events[start:] if e.part_kind == pb.PART_KIND_TEXT)


async def _leftovers(redis: Redis, server: RunningServer, session_id: str) -> list[bytes]:
    """The session's attachments keys and checkpoint hash still in Redis."""
    keys = server_keys(server, session_id)
    found = [key async for key in redis.scan_iter(match=f"{keys.stream}:attachments:*")]
    return found + ([keys.checkpoint.encode()] if await redis.exists(keys.checkpoint) else [])


async def test_context_and_attachments_reach_the_model_and_begin_shows_only_their_summary(
    server: RunningServer, redis: Redis
) -> None:
    attachments = [
        BinaryContent(data=PNG, media_type="image/png", identifier="cat.png"),
        DocumentUrl("https://example.com/report.pdf"),
        ImageUrl("https://example.com/photo", media_type="image/jpeg"),
    ]
    async with _client(server) as client:
        await client.run("seeing", "s1", "look", context=CONTEXT, attachments=attachments)
        events = await _events(client, "s1")
    begin = events[0]
    assert begin.type == pb.EVENT_TYPE_BEGIN
    assert event_body(begin)["attachments"] == [
        {"kind": "image", "media_type": "image/png", "size": len(PNG), "name": "cat.png"},
        {
            "kind": "document",
            "media_type": "application/pdf",
            "url": "https://example.com/report.pdf",
            "name": DocumentUrl("https://example.com/report.pdf").identifier,
        },
        {
            "kind": "image",
            "media_type": "image/jpeg",
            "url": "https://example.com/photo",
            "name": ImageUrl("https://example.com/photo").identifier,
        },
    ]
    assert "context" not in event_body(begin), "the context is the agent's, not echoed"
    assert len(begin.body_json) < 1000, "no bytes in `begin`"
    assert _text(events).splitlines()[:5] == [
        "instructions=locale fr, account 42",
        "text=look",
        f"binary=image/png:{len(PNG)}:cat.png",
        "document-url=application/pdf:https://example.com/report.pdf",
        "image-url=image/jpeg:https://example.com/photo",
    ]
    runtime = server.servicer.runtime
    session = RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    request = session.msgs[0]
    assert isinstance(request, ModelRequest)
    [prompt] = [part for part in request.parts if isinstance(part, UserPromptPart)]
    assert not isinstance(prompt.content, str)
    text, image, document, photo = prompt.content
    assert text == "look"
    assert isinstance(image, BinaryContent)
    assert (image.data, image.media_type, image.identifier) == (PNG, "image/png", "cat.png")
    assert isinstance(document, DocumentUrl)
    assert document.url == "https://example.com/report.pdf"
    assert isinstance(photo, ImageUrl)
    assert await _leftovers(redis, server, "s1") == [], "the run's attachments went with it"


async def test_a_context_of_any_shape_reaches_an_agent_that_declares_none(server: RunningServer) -> None:
    context = {"tags": [1, 2.5], "user": {"name": "Zoë"}, "beta": True}
    async with _client(server) as client:
        await client.run("seeing_any", "s1", "hi", context=context)
        events = await _events(client, "s1")
    assert _text(events).splitlines()[:2] == [f"instructions=context {json.dumps(context, sort_keys=True)}", "text=hi"]


def _attachment(**fields: Any) -> pb.Attachment:
    return pb.Attachment(**fields)


REFUSED: dict[str, tuple[str, dict[str, Any]]] = {
    "context over its bound": ("seeing_any", {"context": {"k": "x" * 200}}),
    "context not of the agent's model": ("seeing", {"context": {"locale": "fr"}}),
    "context of the wrong type": ("seeing", {"context": {"locale": "fr", "account": "many"}}),
    "too many attachments": ("seeing", {"attachments": [_attachment(data=b"x", media_type="text/plain")] * 4}),
    "an attachment over its bound": (
        "seeing",
        {"attachments": [_attachment(data=b"x" * 2001, media_type="image/png")]},
    ),
    "attachments over their total": (
        "seeing",
        {"attachments": [_attachment(data=b"x" * 1600, media_type="image/png")] * 2},
    ),
    "empty data": ("seeing", {"attachments": [_attachment(data=b"", media_type="image/png")]}),
    "neither data nor url": ("seeing", {"attachments": [_attachment(media_type="image/png")]}),
    "data without a media type": ("seeing", {"attachments": [_attachment(data=b"x")]}),
    "a malformed media type": ("seeing", {"attachments": [_attachment(data=b"x", media_type="png")]}),
    "an unknown media type": ("seeing", {"attachments": [_attachment(data=b"x", media_type="image/x-unheard-of")]}),
    "a kind that contradicts the media type": (
        "seeing",
        {"attachments": [_attachment(data=b"x", media_type="image/png", kind=pb.ATTACHMENT_KIND_VIDEO)]},
    ),
    "an ftp url": ("seeing", {"attachments": [_attachment(url="ftp://example.com/a.png")]}),
    "a javascript url": ("seeing", {"attachments": [_attachment(url="javascript:alert(1)", media_type="image/png")]}),
    "a url without a host": ("seeing", {"attachments": [_attachment(url="https:///a.png")]}),
    "a url of no known type": ("seeing", {"attachments": [_attachment(url="https://example.com/a")]}),
    "an unknown kind": ("seeing", {"attachments": [_attachment(url="https://example.com/a.png", kind=9)]}),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_inputs_out_of_bounds_or_invalid_are_refused_with_nothing_written(
    server: RunningServer, redis: Redis, case: str
) -> None:
    agent, fields = REFUSED[case]
    request = pb.RunRequest(agent=agent, session_id="s1", prompt="hi", **fields)
    async with _client(server) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.stub.Run(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details()
        assert (await client.stub.ListActive(pb.ListActiveRequest())).sessions == []
    keys = server_keys(server, "s1")
    assert not await redis.exists(keys.stream, keys.live, keys.durable), "no `begin`, no run"
    assert await server.servicer.runtime.queue.depth(1) == 0, "nothing counted as queued"
    assert await _leftovers(redis, server, "s1") == []


async def test_a_run_refused_as_busy_leaves_no_attachments_and_one_enqueued_gets_its_own(
    server: RunningServer, redis: Redis
) -> None:
    image = BinaryContent(data=PNG, media_type="image/png", identifier="second.png")
    async with _client(server) as client:
        await client.run("stalling", "s1", "first")
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await client.run("seeing", "s1", "second", run_id="r2", context=CONTEXT, attachments=[image])
        assert busy.value.code() == grpc.StatusCode.ALREADY_EXISTS
        keys = server_keys(server, "s1")
        assert not await redis.exists(keys.attachments("r2")), "a refused run's attachments are dropped"
        waiting = await client.run(
            "seeing", "s1", "second", context=CONTEXT, attachments=[image], if_busy=pb.BUSY_POLICY_ENQUEUE
        )
        assert waiting.waiting
        assert await client.cancel("s1")
        deadline = time.monotonic() + 30
        # The session's stream holds the first run (to its `end`) until the waiting run starts and replaces it.
        while event_body((events := await _events(client, "s1"))[0])["run_id"] != waiting.run_id:
            assert time.monotonic() < deadline, "the waiting run did not start"
            await asyncio.sleep(0.05)
    assert _text(events).splitlines()[:3] == [
        "instructions=locale fr, account 42",
        "text=second",
        f"binary=image/png:{len(PNG)}:second.png",
    ]
    assert await _leftovers(redis, server, "s1") == []


async def test_a_run_taken_over_after_its_worker_was_killed_keeps_its_context_and_attachments(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    """An API-only server queues the run; a worker process runs it and is killed -9 mid-answer; another worker
    takes it over and starts it again (no checkpoint: it called no tool) with the same context and attachments."""
    settings.lease_ttl, settings.lease_renew_interval = 1.5, 0.1
    env = {
        "PYDANTIC_AI_STREAM_LEASE_TTL": "1.5",
        "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1",
        "TEST_PACE_SECONDS": "0.1",
    }
    config = ServerSettings(redis_url=redis_url, port=0, concurrency=0, agents=AGENTS)
    image = BinaryContent(data=PNG, media_type="image/png", identifier="cat.png")
    async with running_server(config, settings=settings) as api, _client(api) as client:
        with worker_process(redis_url, settings.redis_prefix, "--agent", "seeing=grpc_agents:seeing", env=env) as first:
            await client.run("seeing", "s1", "look", context=CONTEXT, attachments=[image])
            seen: list[pb.Event] = []
            listening = client.listen("s1", timeout_seconds=30)
            async for event in listening:
                seen.append(event)
                if event.content_delta == "t2 ":
                    break
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
        from grpc_agents import seeing

        async with Worker(runtime=api.servicer.runtime, agents={"seeing": seeing}):
            seen += [event async for event in listening]
    assert sum(e.kind == pb.EVENT_KIND_RESUMED for e in seen) == 1, "taken over once"
    resumed = _text(seen)
    assert resumed.splitlines()[:3] == [
        "instructions=locale fr, account 42",
        "text=look",
        f"binary=image/png:{len(PNG)}:cat.png",
    ], "the resumed attempt saw the same context and attachments"
    assert resumed.endswith(f"t{SEEING_TOKENS - 1} ")
    assert seen[-1].type == pb.EVENT_TYPE_END
    keys = api.servicer.runtime.keys(scope_id=1, user_id=1, session_id="s1")
    assert not await redis.exists(keys.checkpoint, keys.attachments("x"))
    assert [key async for key in redis.scan_iter(match=f"{keys.stream}:attachments:*")] == []
