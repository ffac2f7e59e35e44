"""Redis faults under a live gRPC server: stalls, restarts, killed and idle-closed connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
from redis.asyncio import Redis

from conftest import RedisServer
from pydantic_ai_stream import settings
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.serve import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the test's own to break the server's Redis with."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[RunningServer]:
    config = ServerSettings(redis_url=redis_server.url, port=0, agents={"stalling": "grpc_agents:stalling"})
    async with running_server(config) as running:
        yield running


async def _code(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def _until(events: AsyncIterator[pb.Event], text: str) -> None:
    async for event in events:
        if text in (event.content, event.content_delta):
            return
    raise AssertionError(f"the stream ended before {text!r}")


async def test_a_stalled_redis_makes_run_unavailable(server: RunningServer, admin: Redis) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        # Longer than a start waits for Redis (it waited 5 s, then failed with UNKNOWN).
        await admin.execute_command("CLIENT", "PAUSE", "5500", "ALL")
        assert await _code(client.run("demo", "s1", "hi", timeout=None)) == grpc.StatusCode.UNAVAILABLE
        await admin.ping()  # answered once the pause is over
        assert await client.list_active() == []
        assert await admin.exists(f"{settings.redis_prefix}:1:1:s1") == 0


async def test_run_honours_the_callers_deadline_while_redis_stalls(server: RunningServer, admin: Redis) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        await client.run("stalling", "s0", "go")  # the process is ready for runs: the next start goes to Redis
        await _until(client.listen("s0"), "hard ")
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        assert await _code(client.run("stalling", "s1", "go", timeout=0.3)) == grpc.StatusCode.DEADLINE_EXCEEDED
        await admin.ping()
        # The call was cancelled with its caller: no run was started once Redis answered again.
        assert await client.list_active() == ["s0"]
        assert await admin.exists(f"{settings.redis_prefix}:1:1:s1") == 0
        assert await client.cancel("s0") is True
