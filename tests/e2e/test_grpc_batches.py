"""Listen's opt-in batches (`ListenRequest.max_batch_events`): several events in one response while a listener
is behind, never to a client that did not ask; resuming after a batch's last event continues exactly."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from pydantic_ai_stream.v1 import stream_pb2_grpc as pb_grpc


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(redis_url=redis_url, port=0, agents={"weather": "grpc_agents:weather"})
    async with running_server(config, settings=settings) as running:
        yield running


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[StreamClient]:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        yield client


async def _responses(client: StreamClient, *, after: str = "", most: int = 0) -> list[pb.ListenResponse]:
    request = pb.ListenRequest(session_id="s1", after_event_id=after, max_batch_events=most)
    return [response async for response in client.stub.Listen(request)]


def _events(responses: list[pb.ListenResponse]) -> list[pb.Event]:
    events: list[pb.Event] = []
    for response in responses:
        kind = response.WhichOneof("payload")
        events += [response.event] if kind == "event" else list(response.events.events) if kind == "events" else []
    return events


@pytest.fixture
async def finished(client: StreamClient) -> list[pb.Event]:
    """The events of a finished run, listened to one a response (as an old client does)."""
    await client.run("weather", "s1", "hi")
    old = await _responses(client)
    assert {response.WhichOneof("payload") for response in old} == {"event"}, "an old client never gets a batch"
    assert old[-1].event.type == pb.EVENT_TYPE_END
    return _events(old)


async def test_a_listener_behind_gets_its_events_in_batches(client: StreamClient, finished: list[pb.Event]) -> None:
    responses = await _responses(client, most=4)
    batches = [r.events.events for r in responses if r.WhichOneof("payload") == "events"]
    assert batches, "a listener reading a finished run is behind: it gets batches"
    assert max(len(batch) for batch in batches) == 4
    assert _events(responses) == finished


async def test_resuming_after_a_batch_s_last_event_continues_exactly(
    client: StreamClient, finished: list[pb.Event]
) -> None:
    first = (await _responses(client, most=3))[0]
    assert first.WhichOneof("payload") == "events"
    head = list(first.events.events)
    rest = _events(await _responses(client, after=head[-1].id, most=3))
    assert head + rest == finished


async def test_stream_client_yields_single_events_from_batches(client: StreamClient, finished: list[pb.Event]) -> None:
    assert [event async for event in client.listen("s1")] == finished


class _OlderServer(pb_grpc.AgentStreamServiceServicer):
    """A server that predates `max_batch_events`: it refuses requests with fields it does not know."""

    def __init__(self, upstream: StreamClient) -> None:
        self.upstream = upstream
        self.requests: list[pb.ListenRequest] = []

    async def Listen(
        self, request: pb.ListenRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListenResponse]:  # type: ignore[type-arg]
        self.requests.append(request)
        if request.max_batch_events:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request has fields this server does not know")
        async for response in self.upstream.stub.Listen(request):
            yield response


async def test_stream_client_listens_unbatched_to_an_older_server(
    client: StreamClient, finished: list[pb.Event]
) -> None:
    front = grpc.aio.server()
    older = _OlderServer(client)
    pb_grpc.add_AgentStreamServiceServicer_to_server(older, front)
    port = front.add_insecure_port("127.0.0.1:0")
    await front.start()
    try:
        async with StreamClient(f"127.0.0.1:{port}") as through:
            at_once = await asyncio.gather(*(_listened(through) for _ in range(3)))  # all refused, each asks again
            assert at_once == [finished] * 3
            assert await _listened(through) == finished
    finally:
        await front.stop(grace=None)
    asked = [r.max_batch_events > 0 for r in older.requests]
    assert asked.count(False) == 4, "each refused Listen asked again without"
    assert not asked[-1], "then the client remembers"


async def _listened(client: StreamClient) -> list[pb.Event]:
    return [event async for event in client.listen("s1")]


async def test_the_servicer_on_a_plain_server_sends_messages(server: RunningServer, finished: list[pb.Event]) -> None:
    """`AgentStreamServicer` added with the generated function to a server of one's own (no bytes sent as is)."""
    plain = grpc.aio.server()
    mounted = dataclasses.replace(server.servicer, sends_bytes=False)
    pb_grpc.add_AgentStreamServiceServicer_to_server(mounted, plain)
    port = plain.add_insecure_port("127.0.0.1:0")
    await plain.start()
    try:
        async with StreamClient(f"127.0.0.1:{port}") as through:
            assert await _listened(through) == finished
            assert _events(await _responses(through, most=4)) == finished
    finally:
        await plain.stop(grace=None)
