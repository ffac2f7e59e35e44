"""The gRPC service under hostile input: auth edges, sizes, malformed bytes, a bounded fuzz of every RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.serve import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb

TOKENS = ["alice-token=1:1", "carol-token=1:3:weather"]
SERVICE = "/pydantic_ai_stream.v1.AgentStreamService"


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[RunningServer]:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"stalling": "grpc_agents:stalling", "weather": "grpc_agents:weather"},
        tokens=TOKENS,
        shutdown_grace=0.5,
    )
    async with running_server(config) as running:
        yield running


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


async def test_two_authorization_entries_are_refused(server: RunningServer) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        for metadata in (
            (("authorization", "Bearer carol-token"), ("authorization", "Bearer alice-token")),
            (("authorization", "Bearer alice-token"), ("authorization", "Bearer alice-token")),
        ):
            call = client.stub.ListActive(pb.ListActiveRequest(), metadata=metadata)
            assert (await _error(call)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_with_trailing_whitespace_is_refused(server: RunningServer) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        for value in ("Bearer alice-token ", "Bearer  alice-token", "bearer alice-token  "):
            call = client.stub.ListActive(pb.ListActiveRequest(), metadata=(("authorization", value),))
            assert (await _error(call)).code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await client.stub.ListActive(pb.ListActiveRequest(), metadata=(("authorization", "Bearer alice-token"),))
        assert list(ok.sessions) == []


async def test_an_unknown_agent_lists_only_the_agents_the_caller_may_run(server: RunningServer) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}", token="carol-token") as carol:
        error = await _error(carol.run("nope", "s1", "hi"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "weather" in (error.details() or "")
    assert "stalling" not in (error.details() or "")
