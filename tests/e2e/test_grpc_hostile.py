"""The gRPC service under hostile input: auth edges, sizes, malformed bytes, a bounded fuzz of every RPC."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream._edges.grpc.server import _MalformedRequests
from pydantic_ai_stream._edges.grpc.servicer import MalformedRequest
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import server_keys

TOKENS = ["alice-token=1:1", "carol-token=1:3:weather"]
SERVICE = "/pydantic_ai_stream.v1.AgentStreamService"
UNARY = ("Run", "Cancel", "ListActive")
RPCS = ("Run", "Listen", "Cancel", "ListActive")


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"stalling": "grpc_agents:stalling", "weather": "grpc_agents:weather"},
        tokens=TOKENS,
        shutdown_grace=0.5,
    )
    async with running_server(config, settings=settings) as running:
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


# A default client's receive limit: every message the server sends must fit it.
DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024
MAX_PROMPT = 3_500_000


@pytest.mark.parametrize("prompt", ["é" * 1_400_000, "x" * MAX_PROMPT, "é" * (MAX_PROMPT // 2), "a\n" * 1_000_000])
async def test_large_prompts_run_and_a_default_client_receives_their_begin(
    server: RunningServer, redis_url: str, prompt: str
) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        await client.run("weather", "big", prompt)
        events = [e async for e in client.listen("big")]
    assert event_body(events[0])["user_prompt"] == prompt
    assert events[-1].type == pb.EVENT_TYPE_END
    redis = Redis.from_url(redis_url)
    [(_, fields)] = await redis.xrange(server_keys(server, "big").stream, count=1)
    await redis.aclose()
    assert len(fields[b"body"]) < len(prompt.encode()) * 2  # stored as UTF-8, not \u-escaped
    assert pb.ListenResponse(event=events[0]).ByteSize() < DEFAULT_MAX_RECEIVE


@pytest.mark.parametrize(
    "prompt",
    ["x" * 3_700_000, "é" * 2_000_000, "x" * 6_000_000, "\x01" * 700_000],  # the last one: \u0001 in JSON
)
async def test_a_prompt_too_large_to_store_is_refused_before_anything_is_written(
    server: RunningServer, redis_url: str, prompt: str
) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        error = await _error(client.run("weather", "big", prompt))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "prompt" in (error.details() or "")
        assert len(error.details() or "") < 200
        assert await client.list_active() == []
    redis = Redis.from_url(redis_url)
    assert await redis.keys(f"{server_keys(server, 'big').stream}*") == []
    await redis.aclose()


async def test_the_prompt_limit_is_a_server_setting(redis_url: str, settings: Settings) -> None:
    config = ServerSettings(redis_url=redis_url, port=0, tokens=TOKENS, max_prompt_bytes=1000)
    async with (
        running_server(config, settings=settings) as server,
        StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client,
    ):
        await client.run("demo", "small", "é" * 499)  # 998 bytes and two quotes
        error = await _error(client.run("demo", "small-2", "é" * 500))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "prompt is 1002 bytes as stored (UTF-8 JSON); the limit is 1000"


async def test_errors_quote_at_most_a_prefix_of_the_input(server: RunningServer) -> None:
    huge = "x" * 100_000
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        errors = [
            await _error(client.run(huge, "s1", "hi")),
            await _error(client.run("weather", huge, "hi")),
            await _error(client.run("weather", "s1", "hi", run_id=huge)),
            await _error(client.run("weather", "s1:" + huge, "hi")),
            await _error(client.run("weather", "s1", "hi", model_settings={huge: 1, "y" + huge: 2})),
            await _error(_drain(client.listen("s1", after=huge))),
        ]
    assert [e.code() for e in errors] == [grpc.StatusCode.NOT_FOUND] + [grpc.StatusCode.INVALID_ARGUMENT] * 5
    assert all(len(e.details() or "") < 300 for e in errors), [len(e.details() or "") for e in errors]


async def _drain(events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass


# Requests as raw bytes: what a client with a broken encoder, or an attacker, sends.


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    length, size = b"", len(payload)
    while True:
        length += bytes([size & 0x7F | (0x80 if size > 0x7F else 0)])
        size >>= 7
        if not size:
            return bytes([number << 3 | 2]) + length + payload


def _deep_struct(depth: int) -> bytes:
    """A `google.protobuf.Struct` nested `depth` times: {"a": {"a": ...}}."""
    struct = b""
    for _ in range(depth):
        struct = _field(1, _field(1, b"a") + _field(2, _field(5, struct)))  # fields{key, value{struct_value}}
    return struct


class _RawClient:
    """Calls each RPC with raw bytes and returns the status code it ends with."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        def identity(raw: bytes) -> bytes:
            return raw

        self._unary = {name: channel.unary_unary(f"{SERVICE}/{name}", identity, identity) for name in UNARY}
        self._listen = channel.unary_stream(f"{SERVICE}/Listen", identity, identity)

    async def code(self, name: str, payload: bytes, token: str | None = "alice-token") -> grpc.StatusCode:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            if name == "Listen":
                async for _ in self._listen(payload, metadata=metadata, timeout=0.5):
                    pass
            else:
                await self._unary[name](payload, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


MALFORMED = {
    "invalid UTF-8": _field(2, b"s\xff\xfe1"),
    "an overlong UTF-8 slash": _field(2, b"s\xc0\xaf1"),
    "truncated": _field(2, b"session-1")[:-3],
    "a bad wire type": b"\x0f\x01",
    "a 60-deep Struct": _field(1, b"weather") + _field(2, b"s1") + _field(3, b"hi") + _field(5, _deep_struct(60)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_request_is_invalid_argument_or_unauthenticated(
    server: RunningServer, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        code = _RawClient(channel).code
        for name in RPCS:
            for _ in range(50):
                assert await code(name, MALFORMED[case]) == grpc.StatusCode.INVALID_ARGUMENT, name
            assert await code(name, MALFORMED[case], token=None) == grpc.StatusCode.UNAUTHENTICATED, name
            assert await code(name, MALFORMED[case], token="wrong") == grpc.StatusCode.UNAUTHENTICATED, name
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 1  # one rate-limited line


async def test_listen_responses_pass_through_no_wrapper_of_the_malformed_check(server: RunningServer) -> None:
    """Our servicer refuses a malformed request itself (the test above): the interceptor leaves Listen's handler
    the servicer's own, so no layer sits between grpc and each response, which goes out as the servicer's bytes."""
    servicer = server.servicer
    generated = grpc.unary_stream_rpc_method_handler(
        servicer.Listen,
        request_deserializer=pb.ListenRequest.FromString,
        response_serializer=pb.ListenResponse.SerializeToString,
    )

    async def continuation(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        return generated

    details: Any = SimpleNamespace(method=f"{SERVICE}/Listen", invocation_metadata=())
    handler: Any = await _MalformedRequests(servicer).intercept_service(continuation, details)
    assert handler.unary_stream == servicer.Listen
    assert handler.response_serializer is None
    assert handler.request_deserializer(MALFORMED["a bad wire type"]) == MalformedRequest(method=f"{SERVICE}/Listen")


@pytest.mark.parametrize("number", [math.nan, math.inf])
async def test_model_settings_that_json_cannot_carry_are_invalid_argument(server: RunningServer, number: float) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        error = await _error(client.run("weather", "s1", "hi", model_settings={"temperature": number}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


VALID = {
    "Run": pb.RunRequest(
        agent="weather", session_id="fz", prompt="hi", model_settings=struct_pb2.Struct()
    ).SerializeToString()
    + _field(5, _field(1, _field(1, b"temperature") + _field(2, b"\x11" + struct.pack("<d", 0.5)))),
    "Listen": pb.ListenRequest(
        session_id="fz", after_event_id="1-0", wait_seconds=1, timeout_seconds=1
    ).SerializeToString(),
    "Cancel": pb.CancelRequest(session_id="fz").SerializeToString(),
    "ListActive": pb.ListActiveRequest().SerializeToString(),
}
# A status a caller can act on; UNKNOWN and INTERNAL would mean the server broke on the input.
PROPER = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a Listen that validly waits for a session, cut by the client
}


def _mutations(valid: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Seeded hostile variants of a valid request: truncations, bit flips, garbage, bad UTF-8, deep nesting."""
    variants = [valid[:cut] for cut in range(len(valid))]
    for _ in range(count):
        flipped = bytearray(valid or b"\x00")
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append(bytes(flipped))
        variants.append(rng.randbytes(rng.randint(1, 64)))
        variants.append(valid + _field(rng.choice([1, 2, 3, 4]), rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"])))
    variants += [valid + _field(5, _deep_struct(depth)) for depth in (33, 34, 60, 500)]
    variants += [valid + b"\x0b" * depth + b"\x0c" * depth for depth in (10, 200)]  # nested unknown groups
    return variants


async def test_fuzzing_every_rpc_with_malformed_bytes_gets_proper_statuses(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rng = random.Random(20261125)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        client = _RawClient(channel)
        cases = [(name, payload) for name in RPCS for payload in _mutations(VALID[name], rng, 100)]
        limit = asyncio.Semaphore(32)

        async def code(name: str, payload: bytes) -> tuple[str, bytes, grpc.StatusCode]:
            async with limit:
                return name, payload, await client.code(name, payload)

        results = await asyncio.gather(*(code(name, payload) for name, payload in cases))
        improper = [(name, payload, status) for name, payload, status in results if status not in PROPER]
        assert not improper, improper[:5]
        codes = {status for _, _, status in results}
        assert grpc.StatusCode.INVALID_ARGUMENT in codes
        assert len(cases) > 1000
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 1  # one rate-limited line
    # The server still serves a normal run and its events.
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        await client.run("weather", "after-fuzz", "weather in Paris?")
        events = [e async for e in client.listen("after-fuzz")]
    assert events[0].type == pb.EVENT_TYPE_BEGIN
    assert events[-1].type == pb.EVENT_TYPE_END
    assert "".join(e.content + e.content_delta for e in events if e.part_kind == pb.PART_KIND_TEXT) == "It is sunny."


async def test_malformed_requests_to_health_and_reflection_are_invalid_argument(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def identity(raw: bytes) -> bytes:
        return raw

    async def code(call: Any) -> grpc.StatusCode:
        try:
            if hasattr(call, "__aiter__"):
                async for _ in call:
                    pass
            else:
                await call
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", identity, identity)
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch", identity, identity)
        reflections = [
            channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo", identity, identity
            )
            for version in ("v1", "v1alpha")
        ]
        for payload in (b"\x0a\x02\xff\xfe", b"\x0a\x05ab", b"\xff\xff\xff"):  # bad UTF-8, truncated, bad tag
            assert await code(check(payload)) == grpc.StatusCode.INVALID_ARGUMENT
            assert await code(watch(payload, timeout=2)) == grpc.StatusCode.INVALID_ARGUMENT
            for reflection in reflections:
                assert await code(reflection(iter([payload]), timeout=2)) == grpc.StatusCode.INVALID_ARGUMENT
        healthy = await channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            health_pb2.HealthCheckRequest.SerializeToString,
            health_pb2.HealthCheckResponse.FromString,
        )(health_pb2.HealthCheckRequest())
        assert healthy.status == health_pb2.HealthCheckResponse.SERVING
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 1  # one rate-limited line
