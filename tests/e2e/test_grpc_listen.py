"""gRPC `Listen` on live runs: it lasts until `end`, a limit that ends it early says so, cursors stay private."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from pydantic_ai_stream import Settings
from pydantic_ai_stream._write.live import LiveRun
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"stalling": "grpc_agents:stalling", "weather": "grpc_agents:weather"},
        tokens=["alice-token=1:1"],
        heartbeat_interval=0.2,
    )
    async with running_server(config, settings=settings) as running:
        yield running


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[StreamClient]:
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        yield client


async def _until(events: AsyncIterator[pb.Event], text: str) -> list[pb.Event]:
    seen = []
    async for event in events:
        seen.append(event)
        if event.content_delta == text:
            return seen
    raise AssertionError(f"stream ended before {text!r}: {seen}")


async def test_a_listen_resumed_on_a_silent_live_run_lasts_until_end(client: StreamClient) -> None:
    await client.run("stalling", "s1", "go")
    seen = await _until(client.listen("s1"), "hard ")
    call = client.stub.Listen(
        pb.ListenRequest(session_id="s1", after_event_id=seen[-1].id, wait_seconds=1, timeout_seconds=0),
        metadata=client.metadata,
    )
    started = time.monotonic()
    async for response in call:  # heartbeats, well past wait_seconds
        assert response.WhichOneof("payload") == "heartbeat"
        if time.monotonic() - started > 1.5:
            break
    assert await client.cancel("s1")
    rest = [r.event async for r in call if r.WhichOneof("payload") == "event"]
    assert [(e.type, event_body(e).get("msg")) for e in rest] == [
        (pb.EVENT_TYPE_ERROR, "canceled"),
        (pb.EVENT_TYPE_END, None),
    ]
    assert await call.code() == grpc.StatusCode.OK


async def test_a_silence_limit_ends_the_listen_with_a_status_and_the_client_raises(client: StreamClient) -> None:
    await client.run("stalling", "s1", "go")
    received: list[pb.Event] = []

    async def listen() -> None:
        async for event in client.listen("s1", timeout_seconds=1):
            received.append(event)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await listen()
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "resume after" in (error.value.details() or "")
    assert "".join(e.content + e.content_delta for e in received) == "thinking hard "
    assert await client.list_active() == ["s1"], "the run itself goes on"
    await client.cancel("s1")


async def test_a_listen_after_end_closes_at_once(client: StreamClient) -> None:
    await client.run("weather", "s1", "hi")
    events = [e async for e in client.listen("s1")]
    started = time.monotonic()
    assert [e async for e in client.listen("s1", after=events[-1].id, wait_seconds=3)] == []
    assert time.monotonic() - started < 0.5
    assert [e async for e in client.listen("s1", after=events[-2].id)] == events[-1:]


async def test_a_far_future_cursor_is_refused_and_harms_no_other_listener(client: StreamClient) -> None:
    await client.run("stalling", "s1", "go")
    seen = await _until(client.listen("s1"), "hard ")
    ahead = f"{int(seen[-1].id.split('-')[0]) + 10**9}-0"
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            [e async for e in client.listen("s1", after=ahead)]
        assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE
    listening = client.listen("s1")
    assert await _until(listening, "hard ") == seen
    await client.cancel("s1")
    rest = [e async for e in listening]
    assert [e.type for e in rest] == [pb.EVENT_TYPE_ERROR, pb.EVENT_TYPE_END]


async def test_resuming_a_live_run_right_after_dropping_the_listen_loses_nothing(client: StreamClient) -> None:
    for trial in range(5):
        session = f"s{trial}"
        await client.run("weather", session, "hi")  # fast: resumes land while the hub's read is in flight
        first = client.listen(session)
        head = [await anext(first) for _ in range(3 + trial)]
        await first.aclose()
        resumed = [e async for e in client.listen(session, after=head[-1].id)]
        full = [e async for e in client.listen(session)]
        assert head + resumed == full
        assert full[-1].type == pb.EVENT_TYPE_END


async def test_many_concurrent_resumes_of_one_live_run_each_get_their_exact_suffix(
    redis_url: str, settings: Settings
) -> None:
    config = ServerSettings(redis_url=redis_url, port=0, demo=True, heartbeat_interval=0.2)
    async with running_server(config, settings=settings) as server, StreamClient(f"127.0.0.1:{server.port}") as client:
        await client.run("demo", "d1", "count these words please")
        prefix: list[pb.Event] = []
        listening = client.listen("d1")
        while len(prefix) < 8:
            prefix.append(await anext(listening))
        await listening.aclose()

        async def resume(k: int) -> list[pb.Event]:
            return [e async for e in client.listen("d1", after=prefix[k].id)]

        resumed = await asyncio.wait_for(asyncio.gather(*(resume(k % 8) for k in range(24))), 30)
        full = [e async for e in client.listen("d1")]
        assert full[:8] == prefix
        for k, events in enumerate(resumed):
            assert events == full[k % 8 + 1 :]


async def test_a_run_started_by_the_library_streams_to_any_token_over_grpc(
    server: RunningServer, client: StreamClient
) -> None:
    """A run started in a process of its own with the library (its `begin` names no agent) is listened to over
    gRPC from its `begin` to its `end` by a token that may run every agent (the agent rule limits only limited
    tokens)."""
    runtime = server.servicer.runtime
    live = await LiveRun.open(runtime, runtime.keys(scope_id=1, user_id=1, session_id="lib"), run_id="r1")
    await live.add("info", "developer", {"step": 1})
    await live.close(grace_ms=60_000)
    events = [event async for event in client.listen("lib")]
    assert [e.type for e in events] == [pb.EVENT_TYPE_BEGIN, pb.EVENT_TYPE_INFO, pb.EVENT_TYPE_END]
    assert event_body(events[1]) == {"step": 1}
