"""Runs racing for one session over gRPC: one execution, one `begin`, one `end`, whatever the timing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import server_keys, status_of, wait_renewed


@dataclass
class Script:
    """What the hosted agent did and waits for; each test sets up its own."""

    executions: int = 0
    """Model calls that start a run (no tool answered yet)."""
    tool_calls: int = 0
    tool_entered: asyncio.Event = field(default_factory=asyncio.Event)
    tool_gate: asyncio.Event = field(default_factory=asyncio.Event)
    answer_gate: asyncio.Event = field(default_factory=asyncio.Event)


script = Script()


def _answered(messages: list[ModelMessage]) -> bool:
    return any(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)


async def _stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    if not _answered(messages):
        script.executions += 1
        yield {0: DeltaToolCall(name="step", json_args="{}", tool_call_id="call-1")}
        return
    yield "one "
    await script.answer_gate.wait()
    yield "two"


counted = Agent(FunctionModel(stream_function=_stream), name="counted")


@counted.tool_plain
async def step() -> str:
    script.tool_calls += 1
    script.tool_entered.set()
    await script.tool_gate.wait()
    return "stepped"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings, with short leases: a lapsed lease shows in four seconds (not less: with the suite
    run twice at once beside two CPU hogs, the loop that renews them stalled for over a second)."""
    return Settings(redis_prefix=settings.redis_prefix, lease_ttl=2.0, lease_renew_interval=0.05)


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    global script
    script = Script()
    config = ServerSettings(redis_url=redis_url, port=0, agents={"counted": "test_run_races:counted"})
    async with running_server(config, settings=settings) as running:
        yield running


async def _finish(client: StreamClient, session_id: str) -> list[pb.Event]:
    script.tool_gate.set()
    script.answer_gate.set()
    return [e async for e in client.listen(session_id)]


def _assert_one_clean_run(events: list[pb.Event]) -> None:
    types = [e.type for e in events]
    assert types.count(pb.EVENT_TYPE_BEGIN) == 1
    assert types.count(pb.EVENT_TYPE_END) == 1
    assert [event_body(e) for e in events if e.type == pb.EVENT_TYPE_ERROR] == []
    assert [e.content for e in events if e.part_kind == pb.PART_KIND_TOOL_RETURN] == ["stepped"]
    assert "".join(e.content + e.content_delta for e in events if e.part_kind == pb.PART_KIND_TEXT) == "one two"
    assert (script.executions, script.tool_calls) == (1, 1)


@pytest.mark.parametrize("seed", [1, 2])
async def test_concurrent_retries_of_one_run_execute_it_once(
    server: RunningServer, redis: Redis, settings: Settings, seed: int
) -> None:
    rng = random.Random(seed)

    async def retry() -> pb.RunResponse:
        await asyncio.sleep(rng.random() * 0.02)  # spread the 50 calls over the start of the run
        return await client.run("counted", "s1", "go", run_id="r-1")

    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        responses = await asyncio.gather(*(retry() for _ in range(50)))
        assert {(r.run_id, r.begin_event_id) for r in responses} == {("r-1", responses[0].begin_event_id)}
        await asyncio.wait_for(script.tool_entered.wait(), 5)
        await wait_renewed(redis, server_keys(server, "s1").live, past=settings.lease_ttl)
        events = await _finish(client, "s1")
    assert events[0].id == responses[0].begin_event_id
    _assert_one_clean_run(events)


async def test_concurrent_runs_with_their_own_ids_let_one_win(
    server: RunningServer, redis: Redis, settings: Settings
) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        codes = await asyncio.gather(
            *(status_of(client.run("counted", "s1", "go", run_id=f"r-{i}")) for i in range(100))
        )
        assert sorted(codes, key=lambda c: c.value) == [grpc.StatusCode.OK] + [grpc.StatusCode.ALREADY_EXISTS] * 99
        await asyncio.wait_for(script.tool_entered.wait(), 5)
        # The winner's lease is renewed past its TTL: no loser stopped the process's lease keeper.
        await wait_renewed(redis, server_keys(server, "s1").live, past=settings.lease_ttl)
        events = await _finish(client, "s1")
    _assert_one_clean_run(events)
    assert event_body(events[0])["run_id"] == f"r-{codes.index(grpc.StatusCode.OK)}"


async def test_a_retry_at_any_point_of_the_run_or_after_it_gets_the_same_run(server: RunningServer) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        first = await client.run("counted", "s1", "go", run_id="r-1")
        again = [await client.run("counted", "s1", "go", run_id="r-1")]  # at once
        listening = client.listen("s1")
        async for event in listening:
            if event.part_kind == pb.PART_KIND_TOOL_CALL:
                break
        await asyncio.wait_for(script.tool_entered.wait(), 5)
        again.append(await client.run("counted", "s1", "go", run_id="r-1"))  # mid-tool-call
        script.tool_gate.set()
        async for event in listening:
            if event.content == "one ":
                break
        again.append(await client.run("counted", "s1", "go", run_id="r-1"))  # mid-answer
        events = await _finish(client, "s1")
        again.append(await client.run("counted", "s1", "go", run_id="r-1"))  # after the run ended
        assert [e async for e in client.listen("s1")] == events  # nothing was started again
    assert {(r.run_id, r.begin_event_id) for r in again} == {(first.run_id, first.begin_event_id)}
    _assert_one_clean_run(events)
