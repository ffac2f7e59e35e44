"""`StreamClient.listen` never takes a Listen that closed early for the run's end.

The limits that end a Listen early (DEADLINE_EXCEEDED, NOT_FOUND, OUT_OF_RANGE) are in
test_grpc_listen.py; here, a Listen that closes OK before `end`, as an older replica or a proxy may.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from pydantic_ai_stream.v1 import stream_pb2_grpc as pb_grpc


class _ClosingEarly(pb_grpc.AgentStreamServiceServicer):
    """A gRPC server in front of the real one whose Listen closes OK after a few events, `end` or not."""

    def __init__(self, upstream: StreamClient, events_per_call: int) -> None:
        self.upstream = upstream
        self.events_per_call = events_per_call
        self.calls = 0

    async def Listen(self, request: pb.ListenRequest, context: object) -> AsyncIterator[pb.ListenResponse]:
        self.calls += 1
        if self.events_per_call == 0:
            return
        request.max_batch_events = 0  # one event a response, so closing after a few events is exact
        call = self.upstream.stub.Listen(request, metadata=self.upstream.metadata)
        sent = 0
        async for response in call:
            yield response
            sent += response.WhichOneof("payload") == "event"
            if sent == self.events_per_call:
                break
        call.cancel()


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(redis_url=redis_url, port=0, agents={"weather": "grpc_agents:weather"})
    async with running_server(config, settings=settings) as running:
        yield running


@pytest.fixture
async def upstream(server: RunningServer) -> AsyncIterator[StreamClient]:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        yield client


@pytest.fixture
async def closing_early(upstream: StreamClient) -> AsyncIterator[tuple[_ClosingEarly, StreamClient]]:
    front = grpc.aio.server()
    servicer = _ClosingEarly(upstream, events_per_call=3)
    pb_grpc.add_AgentStreamServiceServicer_to_server(servicer, front)
    port = front.add_insecure_port("127.0.0.1:0")
    await front.start()
    try:
        async with StreamClient(f"127.0.0.1:{port}") as client:
            yield servicer, client
    finally:
        await front.stop(grace=None)


async def test_a_listen_closed_ok_before_end_is_resumed_after_its_last_event(
    upstream: StreamClient, closing_early: tuple[_ClosingEarly, StreamClient]
) -> None:
    servicer, client = closing_early
    await upstream.run("weather", "s1", "hi")
    full = [e async for e in upstream.listen("s1")]
    assert len(full) > 2 * servicer.events_per_call
    events = [e async for e in client.listen("s1", backoff=0.01)]
    assert events == full
    assert servicer.calls == -(-len(full) // servicer.events_per_call)  # one call per few events, resumed each time


async def test_a_listen_from_the_start_that_closes_ok_with_nothing_raises_once_retries_are_spent(
    upstream: StreamClient, closing_early: tuple[_ClosingEarly, StreamClient]
) -> None:
    servicer, client = closing_early
    servicer.events_per_call = 0
    await upstream.run("weather", "s1", "hi")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        [e async for e in client.listen("s1", retries=2, backoff=0.01)]
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 3
