"""The gRPC service end to end: a real server on loopback, a real channel, a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from examples.grpc_quickstart import quickstart
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream._edges.grpc import server as _serve
from pydantic_ai_stream.client import StreamClient, Transcript, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import CANCEL_WITHIN, renew_slowly, server_keys

TOKENS = ["alice-token=1:1", "bob-token=1:2", "carol-token=1:3:weather", "alice-weather-token=1:1:weather"]


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"stalling": "grpc_agents:stalling", "weather": "grpc_agents:weather"},
        tokens=TOKENS,
        heartbeat_interval=0.3,
        shutdown_grace=0.5,
    )
    async with running_server(config, settings=settings) as running:
        yield running


def _client(server: RunningServer, token: str | None = "alice-token") -> StreamClient:
    return StreamClient(f"127.0.0.1:{server.port}", token=token)


async def _events(client: StreamClient, session_id: str, **kwargs: Any) -> list[pb.Event]:
    return [e async for e in client.listen(session_id, **kwargs)]


async def _first(events: AsyncIterator[pb.Event], predicate: Any) -> list[pb.Event]:
    seen = []
    async for event in events:
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError(f"stream ended without a match: {seen}")


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value.code()


async def test_run_then_listen_gets_typed_events(server: RunningServer) -> None:
    async with _client(server) as client:
        started = await client.run("weather", "s1", "weather in Paris?")
        assert started.session_id == "s1"
        assert started.run_id
        events = await _events(client, "s1")
    assert events[0].type == pb.EVENT_TYPE_BEGIN
    assert events[0].id == started.begin_event_id
    assert event_body(events[0])["user_prompt"] == "weather in Paris?"
    assert events[-1].type == pb.EVENT_TYPE_END
    [call] = [e for e in events if e.part_kind == pb.PART_KIND_TOOL_CALL]
    assert (call.kind, call.idx, call.event_idx, call.tool_name) == (pb.EVENT_KIND_PART_START, 0, 0, "get_weather")
    assert call.tool_call_id == "call-1"
    assert dict(call.args) == {"city": "Paris"}
    [ret] = [e for e in events if e.part_kind == pb.PART_KIND_TOOL_RETURN]
    assert (ret.idx, ret.tool_call_id, ret.content, ret.part_kind_name) == (
        0,
        "call-1",
        "sunny in Paris",
        "tool-return",
    )
    text = "".join(e.content + e.content_delta for e in events if e.part_kind == pb.PART_KIND_TEXT)
    assert text == "It is sunny."
    assert any(e.kind == pb.EVENT_KIND_PART_DELTA and e.HasField("content_delta") for e in events)
    assert [e.idx for e in events if e.kind == pb.EVENT_KIND_LLM_BEGIN] == [0, 1]
    assert any(e.kind == pb.EVENT_KIND_ANSWER for e in events)
    assert all(e.origin == "pydantic-ai" for e in events if e.type == pb.EVENT_TYPE_EVENT)


async def test_tool_outcomes_and_delta_kinds_are_typed(redis_url: str, settings: Settings) -> None:
    config = ServerSettings(redis_url=redis_url, port=0, agents={"picky": "grpc_agents:picky"})
    async with running_server(config, settings=settings) as server, _client(server, None) as client:
        await client.run("picky", "p1", "weather?")
        events = await _events(client, "p1")
        await client.run("demo", "d1", "count these four words")
        demo = await _events(client, "d1")
    [ret] = [e for e in events if e.part_kind == pb.PART_KIND_TOOL_RETURN]
    assert (ret.outcome, ret.content) == (pb.TOOL_OUTCOME_RETRIED, "no such city: ?")
    assert all(e.outcome == pb.TOOL_OUTCOME_UNSPECIFIED for e in demo)  # its tool succeeds
    deltas = [e for e in events + demo if e.kind == pb.EVENT_KIND_PART_DELTA]
    assert {e.part_delta_kind for e in deltas} == {pb.PART_KIND_TEXT, pb.PART_KIND_THINKING}
    assert all(e.part_delta_kind == e.part_kind for e in deltas)
    assert all(e.part_delta_kind == pb.PART_KIND_UNSPECIFIED for e in events if e.kind != pb.EVENT_KIND_PART_DELTA)


async def test_the_demo_agent_thinks_calls_a_tool_and_answers(redis_url: str, settings: Settings) -> None:
    async with (
        running_server(ServerSettings(redis_url=redis_url, port=0), settings=settings) as server,
        _client(server, None) as client,
    ):
        await client.run("demo", "d1", "count these four words")
        events = await _events(client, "d1")
    kinds = {e.part_kind for e in events}
    assert {pb.PART_KIND_THINKING, pb.PART_KIND_TOOL_CALL, pb.PART_KIND_TOOL_RETURN, pb.PART_KIND_TEXT} <= kinds
    assert next(e for e in events if e.part_kind == pb.PART_KIND_TOOL_RETURN).content == "4"
    assert events[-1].type == pb.EVENT_TYPE_END

    transcript = Transcript()
    assert not any([transcript.apply(e) for e in events])  # no resume: nothing superseded
    text = "".join(e.content + e.content_delta for e in events if e.part_kind == pb.PART_KIND_TEXT)
    assert transcript.text() == text
    assert text.startswith("You said 4 words at ")
    assert (transcript.ended, transcript.attempt, transcript.error) == (True, 1, None)
    thinking, call, ret = transcript.nodes[0].parts
    assert thinking.content == "The user said something; let me count its words first."
    assert (call.tool_name, call.args, ret.tool_call_id, ret.content) == (
        "count_words",
        {"text": "count these four words"},
        "count-1",
        "4",
    )


async def test_the_quickstart_example_prints_the_streamed_answer(
    redis_url: str, capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    async with running_server(ServerSettings(redis_url=redis_url, port=0), settings=settings) as server:
        await quickstart(f"127.0.0.1:{server.port}", None, "demo", "count these four words")
    printed = capsys.readouterr().out
    assert printed.startswith("[tool] count_words({'text': 'count these four words'})\nYou said 4 words at ")


async def test_listen_resumes_after_an_id_with_nothing_lost_or_repeated(server: RunningServer) -> None:
    async with _client(server) as client:
        await client.run("weather", "s1", "hi")
        events = await _events(client, "s1")
        for k in (0, 3, len(events) - 2):
            assert await _events(client, "s1", after=events[k].id) == events[k + 1 :]


async def test_cancel_mid_stream_ends_the_run_at_once(server: RunningServer) -> None:
    renew_slowly(server.servicer.runtime.settings)
    async with _client(server) as client:
        await client.run("stalling", "s1", "go")
        listening = client.listen("s1")
        await _first(listening, lambda e: e.content_delta == "hard ")
        assert await client.list_active() == ["s1"]
        started = time.monotonic()
        assert await client.cancel("s1") is True
        rest = await _first(listening, lambda e: e.type == pb.EVENT_TYPE_END)
        assert time.monotonic() - started < CANCEL_WITHIN, "by Pub/Sub, not left to the next renewal"
        assert [(e.type, event_body(e).get("msg")) for e in rest[-2:]] == [
            (pb.EVENT_TYPE_ERROR, "canceled"),
            (pb.EVENT_TYPE_END, None),
        ]
        assert await client.cancel("s1") is False
        assert await client.list_active() == []


async def test_a_retried_cancel_naming_the_run_answers_true_again(server: RunningServer) -> None:
    """Cancel's reply was lost and the client sends it again: naming the run, it says the run was cancelled."""
    async with _client(server) as client:
        run = await client.run("stalling", "s1", "go")
        listening = client.listen("s1")
        await _first(listening, lambda e: e.content_delta == "hard ")
        assert await client.cancel("s1", run_id="another") is False
        assert await client.cancel("s1", run_id=run.run_id) is True
        assert await client.cancel("s1", run_id=run.run_id) is True
        rest = await _first(listening, lambda e: e.type == pb.EVENT_TYPE_END)
        assert [(e.type, event_body(e).get("msg")) for e in rest[-2:]] == [
            (pb.EVENT_TYPE_ERROR, "canceled"),
            (pb.EVENT_TYPE_END, None),
        ]
        assert await client.cancel("s1", run_id=run.run_id) is True, "also once it ended"
        assert await client.cancel("s1") is False
        assert await _code(client.cancel("s1", run_id="bad id")) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_run_can_interrupt_the_sessions_run(server: RunningServer) -> None:
    async with _client(server) as client:
        await client.run("stalling", "s1", "go")
        listening = client.listen("s1")
        await _first(listening, lambda e: e.content_delta == "hard ")
        request = pb.RunRequest(agent="weather", session_id="s1", prompt="weather?")
        assert await _code(client.stub.Run(request, metadata=client.metadata)) == grpc.StatusCode.ALREADY_EXISTS
        request.if_busy = pb.BUSY_POLICY_INTERRUPT
        started = await client.stub.Run(request, metadata=client.metadata)
        rest = await _first(listening, lambda e: e.type == pb.EVENT_TYPE_END)
        assert event_body(rest[-2]) == {"msg": "canceled"}
        events = await _events(client, "s1")
        assert events[0].id == started.begin_event_id
        assert event_body(events[0])["user_prompt"] == "weather?"
        request.if_busy = 7  # type: ignore[assignment]
        request.session_id = "s2"
        assert await _code(client.stub.Run(request, metadata=client.metadata)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_enqueued_run_waits_for_the_sessions_run_and_then_runs(server: RunningServer) -> None:
    async with _client(server) as client:
        first = await client.run("stalling", "s1", "go")
        await _first(client.listen("s1"), lambda e: e.content_delta == "hard ")
        waiting = await client.run("weather", "s1", "weather?", if_busy=pb.BUSY_POLICY_ENQUEUE, run_id="r-2")
        assert (waiting.run_id, waiting.begin_event_id, waiting.waiting) == ("r-2", "", True)
        assert [
            s.run_id for s in (await client.stub.ListActive(pb.ListActiveRequest(), metadata=client.metadata)).sessions
        ] == [first.run_id]
        assert await client.cancel("s1")
        async with asyncio.timeout(10):
            events = await _events(client, "s1")
            while event_body(events[0])["run_id"] != "r-2":  # the cancelled run's stream, until r-2 begins
                events = await _events(client, "s1")
        assert event_body(events[0]) == {
            "session_id": "s1",
            "run_id": "r-2",
            "agent": "weather",
            "user_prompt": "weather?",
        }
        assert [e.type for e in events if e.type != pb.EVENT_TYPE_EVENT] == [pb.EVENT_TYPE_BEGIN, pb.EVENT_TYPE_END]
        assert (
            "".join(e.content + e.content_delta for e in events if e.part_kind == pb.PART_KIND_TEXT) == "It is sunny."
        )


async def test_a_retried_run_with_its_run_id_is_the_same_run(server: RunningServer) -> None:
    async with _client(server) as client:
        first = await client.run("stalling", "s1", "go", run_id="r-1")
        again = await client.run("stalling", "s1", "go", run_id="r-1")
        assert (
            (again.run_id, again.begin_event_id)
            == (first.run_id, first.begin_event_id)
            == ("r-1", first.begin_event_id)
        )
        assert await _code(client.run("stalling", "s1", "go", run_id="r-2")) == grpc.StatusCode.ALREADY_EXISTS
        assert await _code(client.run("stalling", "s1", "go")) == grpc.StatusCode.ALREADY_EXISTS
        await client.cancel("s1")


async def test_cancel_ends_a_queued_run_and_a_retried_run_returns_it_after_its_end(
    redis_url: str, settings: Settings
) -> None:
    """What stream.proto says of Cancel and of a retried Run, at the gRPC edge."""
    config = ServerSettings(redis_url=redis_url, port=0, concurrency=0)  # queues runs, executes none
    async with running_server(config, settings=settings) as api, StreamClient(f"127.0.0.1:{api.port}") as client:
        first = await client.run("demo", "q1", "hi", run_id="r-1")
        [queued] = (await client.stub.ListActive(pb.ListActiveRequest())).sessions
        assert (queued.run_id, queued.state, queued.attempt) == ("r-1", pb.RUN_STATE_QUEUED, 0)
        assert await client.cancel("q1") is True
        events = await _events(client, "q1")
        assert [(e.type_name, event_body(e).get("msg")) for e in events] == [
            ("begin", None),
            ("error", "canceled"),
            ("end", None),
        ]
        assert await client.list_active() == []
        again = await client.run("demo", "q1", "hi", run_id="r-1")
        assert (again.run_id, again.begin_event_id) == ("r-1", first.begin_event_id)
        assert [e.id for e in await _events(client, "q1")] == [e.id for e in events], "nothing ran again"
        assert await client.list_active() == []
        assert await client.cancel("q1") is False


async def test_status_codes_mean_what_they_say(server: RunningServer) -> None:
    async with _client(server) as client:
        assert await _code(client.run("weather", "a:b", "hi")) == grpc.StatusCode.INVALID_ARGUMENT
        assert await _code(client.run("weather", "s1", "  ")) == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            await _code(client.run("weather", "s1", "hi", model_settings={"api_key": "x"}))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert await _code(client.run("nope", "s1", "hi")) == grpc.StatusCode.NOT_FOUND
        assert await _code(_events(client, "never-ran", wait_seconds=1)) == grpc.StatusCode.NOT_FOUND
        assert await _code(_events(client, "s1", after="not-an-id")) == grpc.StatusCode.INVALID_ARGUMENT
        listen = client.stub.Listen(pb.ListenRequest(session_id="s1", wait_seconds=5000), metadata=client.metadata)
        assert await _code(_drain(listen)) == grpc.StatusCode.INVALID_ARGUMENT
    async with _client(server, token=None) as anonymous, _client(server, token="wrong") as wrong:
        assert await _code(anonymous.list_active()) == grpc.StatusCode.UNAUTHENTICATED
        assert await _code(wrong.run("weather", "s1", "hi")) == grpc.StatusCode.UNAUTHENTICATED
    async with _client(server, token="carol-token") as carol:
        assert await _code(carol.run("stalling", "s1", "hi")) == grpc.StatusCode.PERMISSION_DENIED


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_unknown_request_fields_are_refused(server: RunningServer) -> None:
    # A newer client's field 99 (varint 1) after a valid request.
    payload = pb.RunRequest(agent="weather", session_id="s1", prompt="hi").SerializeToString() + b"\x98\x06\x01"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        run = channel.unary_unary(
            "/pydantic_ai_stream.v1.AgentStreamService/Run",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.RunResponse.FromString,
        )
        call = run(payload, metadata=(("authorization", "Bearer alice-token"),))
        assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_trimmed_cursor_is_out_of_range(server: RunningServer, redis_url: str) -> None:
    async with _client(server) as client:
        await client.run("weather", "s1", "hi")
        events = await _events(client, "s1")
        redis = Redis.from_url(redis_url)
        await redis.xtrim(server_keys(server, "s1").stream, minid=events[3].id, approximate=False)
        await redis.aclose()
        assert await _code(_events(client, "s1", after=events[1].id)) == grpc.StatusCode.OUT_OF_RANGE


async def test_deadlines_are_honoured(server: RunningServer) -> None:
    async with _client(server) as client:
        await client.run("stalling", "s1", "go")
        call = client.stub.Listen(pb.ListenRequest(session_id="s1"), metadata=client.metadata, timeout=0.5)
        assert await _code(_drain(call)) == grpc.StatusCode.DEADLINE_EXCEEDED
        await client.cancel("s1")


async def test_silent_streams_get_heartbeats(server: RunningServer) -> None:
    async with _client(server) as client:
        await client.run("stalling", "s1", "go")
        call = client.stub.Listen(pb.ListenRequest(session_id="s1"), metadata=client.metadata)
        kinds = []
        async for response in call:
            kinds.append(response.WhichOneof("payload"))
            if kinds[-1] == "heartbeat":
                break
        call.cancel()
        assert kinds[0] == "event"
        assert kinds[-1] == "heartbeat"
        await client.cancel("s1")


async def test_another_user_cannot_touch_the_session(server: RunningServer) -> None:
    async with _client(server) as alice, _client(server, "bob-token") as bob:
        await alice.run("stalling", "s1", "go")
        listening = alice.listen("s1")
        await _first(listening, lambda e: e.content_delta == "hard ")
        assert await bob.list_active() == []
        assert await bob.cancel("s1") is False
        assert await _code(_events(bob, "s1", wait_seconds=1)) == grpc.StatusCode.NOT_FOUND
        # Bob's "s1" is his own session: it neither sees nor disturbs Alice's.
        await bob.run("weather", "s1", "hi")
        bobs = await _events(bob, "s1")
        assert event_body(bobs[0])["user_prompt"] == "hi"
        assert await alice.list_active() == ["s1"]
        assert await alice.cancel("s1") is True
        rest = await _first(listening, lambda e: e.type == pb.EVENT_TYPE_END)
        assert all(event_body(e).get("user_prompt") != "hi" for e in rest)


async def test_a_vanished_listener_stops_reading_redis(server: RunningServer, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    stream = server_keys(server, "s1").stream

    async def followers() -> int:
        """The connections told of the stream's writes: the server's stream hub while someone listens."""
        ((_, count),) = await redis.pubsub_numsub(stream)
        return int(count)

    async with _client(server) as client:
        await client.run("stalling", "s1", "go")
        call = client.stub.Listen(pb.ListenRequest(session_id="s1"), metadata=client.metadata)
        async for response in call:
            if response.event.content_delta == "hard ":
                break
        deadline = time.monotonic() + 5
        while await followers() == 0:  # the server follows the stream for this listener
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        call.cancel()
        deadline = time.monotonic() + 5
        while await followers() > 0:
            assert time.monotonic() < deadline, "the server kept following the stream for a client that left"
            await asyncio.sleep(0.01)
        await client.cancel("s1")
    await redis.aclose()


async def test_health_and_reflection(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pydantic_ai_stream.v1.AgentStreamService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            assert "pydantic_ai_stream.v1.AgentStreamService" in names
            assert "grpc.health.v1.Health" in names
            break


async def test_reflection_v1_beside_v1alpha(server: RunningServer) -> None:
    # v1's messages are v1alpha's, renamed: a v1 client's bytes are these.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for package in ("v1", "v1alpha"):
            info = channel.stream_stream(
                f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="pydantic_ai_stream.v1.Event"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
            ]
            listed, ours, reflection_v1 = [reply async for reply in info(iter(requests))]
            assert {s.name for s in listed.list_services_response.service} >= {
                "pydantic_ai_stream.v1.AgentStreamService",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for reply in (ours, reflection_v1)
                for raw in reply.file_descriptor_response.file_descriptor_proto
            ]
            assert {f.package for f in files} >= {"pydantic_ai_stream.v1", "grpc.reflection.v1"}
            [v1] = [f for f in files if f.package == "grpc.reflection.v1"]
            assert [m.input_type for m in v1.service[0].method] == [".grpc.reflection.v1.ServerReflectionRequest"]


async def test_redis_down_is_unavailable(redis_url: str, settings: Settings) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    config = ServerSettings(redis_url=f"redis://127.0.0.1:{dead_port}/0", port=0, tokens=TOKENS)
    async with running_server(config, settings=settings) as server, _client(server) as client:
        assert await _code(client.run("demo", "s1", "hi")) == grpc.StatusCode.UNAVAILABLE
        assert await _code(client.list_active()) == grpc.StatusCode.UNAVAILABLE
        assert await _code(client.cancel("s1")) == grpc.StatusCode.UNAVAILABLE


async def test_the_client_resumes_listening_when_its_server_goes_away(redis_url: str, settings: Settings) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    front = ServerSettings(redis_url=redis_url, port=port, tokens=TOKENS)
    back = ServerSettings(redis_url=redis_url, port=0, tokens=TOKENS, agents={"stalling": "grpc_agents:stalling"})
    async with running_server(back, settings=settings) as runner, _client(runner) as control:
        await control.run("stalling", "s1", "go")
        async with running_server(front, settings=settings) as first:
            client = _client(first)
            listening = client.listen("s1", backoff=0.05)
            seen = await _first(listening, lambda e: e.content_delta == "hard ")
        # The front server is gone mid-stream; it comes back on the same port and the client resumes.
        async with running_server(front, settings=settings):
            assert await control.cancel("s1") is True
            seen += await _first(listening, lambda e: e.type == pb.EVENT_TYPE_END)
        await client.close()
        full = await _events(control, "s1")
    assert [e.id for e in seen] == [e.id for e in full]


async def test_many_listeners_cost_the_server_a_few_redis_connections(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    named = f"{redis_url}{'&' if '?' in redis_url else '?'}client_name=pais-server"
    config = ServerSettings(redis_url=named, port=0, agents={"stalling": "grpc_agents:stalling"})
    async with running_server(config, settings=settings) as server, _client(server, None) as client:
        sessions = [f"m{i}" for i in range(20)]
        for session in sessions:
            await client.run("stalling", session, "go")
        listens = [client.listen(session) for session in sessions for _ in range(10)]
        for events in listens:  # 200 Listen streams, each has seen its run stream
            await _first(events, lambda e: e.content_delta == "hard ")
        clients = await redis.client_list()
        held = sum(c.get("name") == "pais-server" for c in clients)
        # The shared pool, the listeners' stream hub (one subscriber, one reader) and the worker's blocking claim.
        assert held <= config.redis_max_connections + 3, f"{held} connections for 200 listeners"
        for session in sessions:
            await client.cancel(session)
        for events in listens:
            await _first(events, lambda e: e.type == pb.EVENT_TYPE_END)


async def test_a_server_leaves_no_task_behind(redis_url: str, settings: Settings) -> None:
    config = ServerSettings(redis_url=redis_url, port=0, agents={"stalling": "grpc_agents:stalling"})
    async with running_server(config, settings=settings) as server, StreamClient(f"127.0.0.1:{server.port}") as client:
        await client.run("stalling", "s1", "go")
        async for event in client.listen("s1"):
            if event.content_delta == "hard ":
                break
    assert _our_tasks() == []


async def test_a_server_leaves_no_task_behind_though_a_ping_dropped_its_cancel(
    redis_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis call may drop a cancel as it completes (Python 3.11's `asyncio.wait_for`, which redis-py sends
    each command through): the server's Redis health watch still ends with the server."""
    monkeypatch.setattr(_serve, "_HEALTH_INTERVAL", 0.01)
    pinged, dropped = asyncio.Event(), asyncio.Event()

    async def ping(redis: Redis, **options: Any) -> bool:
        pinged.set()
        if not dropped.is_set():
            try:
                await asyncio.sleep(3600)  # a PING in flight
            except asyncio.CancelledError:
                dropped.set()  # it returns as if the cancel had come a moment later
        return True

    monkeypatch.setattr(Redis, "ping", ping)
    config = ServerSettings(redis_url=redis_url, port=0, concurrency=0)
    async with running_server(config, settings=settings):
        await asyncio.wait_for(pinged.wait(), 10)
    assert dropped.is_set(), "the watch was stopped mid-PING"
    assert _our_tasks() == []


def _our_tasks() -> list[asyncio.Task[object]]:
    """Tasks running the package's code (by the file of their coroutine: its repr names only the function)."""
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and "pydantic_ai_stream" in _code_file(t)]


def _code_file(task: asyncio.Task[object]) -> str:
    code = getattr(task.get_coro(), "cr_code", None)
    return code.co_filename if code is not None else ""


async def test_a_token_limited_to_agents_acts_only_on_runs_of_those_agents(server: RunningServer) -> None:
    """Alice's token limited to `weather` neither lists, listens to nor cancels her run of `stalling`; her runs
    of `weather` it reads as any token does."""
    async with _client(server) as alice, _client(server, token="alice-weather-token") as limited:
        await alice.run("stalling", "stalls", "hi")
        await _first(alice.listen("stalls"), lambda e: e.type == pb.EVENT_TYPE_EVENT)  # it is running
        await limited.run("weather", "sunny", "weather in Paris?")
        assert (await _events(limited, "sunny"))[-1].type == pb.EVENT_TYPE_END
        assert await alice.list_active() == ["stalls"]
        assert await limited.list_active() == []
        assert await _code(_events(limited, "stalls")) == grpc.StatusCode.PERMISSION_DENIED
        assert await _code(limited.cancel("stalls")) == grpc.StatusCode.PERMISSION_DENIED
        assert await alice.list_active() == ["stalls"]  # still running
        assert await alice.cancel("stalls")
        events = await _events(alice, "stalls")
    assert [event_body(e)["msg"] for e in events if e.type == pb.EVENT_TYPE_ERROR] == ["canceled"]
    assert events[-1].type == pb.EVENT_TYPE_END
