"""Runs that wait for input over gRPC: `EVENT_KIND_INPUT_REQUIRED`, `RUN_STATE_WAITING_FOR_INPUT` and `Respond`,
with a real server (and its worker) on loopback, a real channel and a real Redis (docs/waiting-runs.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_agents import OPS_DROPS

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient, approve, deny, external_result, input_calls, retry
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb

WITHIN = 20.0
"""Seconds a step may take on a loaded 2-core machine."""


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"ops": "grpc_agents:ops"},
        tokens=["alice-token=1:1", "bob-token=1:2"],
        heartbeat_interval=0.3,
        shutdown_grace=0.5,
    )
    async with running_server(config, settings=settings) as running:
        yield running


@pytest.fixture
async def alice(server: RunningServer) -> AsyncIterator[StreamClient]:
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as client:
        yield client


async def _until(client: StreamClient, session_id: str, done: Any, **kwargs: Any) -> list[pb.Event]:
    seen = []
    async with asyncio.timeout(WITHIN):
        async for event in client.listen(session_id, **kwargs):
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"the stream ended first: {seen}")


def _waits(event: pb.Event) -> bool:
    return event.kind == pb.EVENT_KIND_INPUT_REQUIRED


def _ends(event: pb.Event) -> bool:
    return event.type == pb.EVENT_TYPE_END


async def _states(client: StreamClient) -> list[tuple[str, int]]:
    response = await client.stub.ListActive(pb.ListActiveRequest(), metadata=client.metadata)
    return [(s.session_id, s.state) for s in response.sessions]


async def _waiting(client: StreamClient, session_id: str) -> tuple[str, pb.Event]:
    run_id = (await client.run("ops", session_id, "clean up")).run_id
    waiting = (await _until(client, session_id, _waits))[-1]
    deadline = time.monotonic() + WITHIN
    while await _states(client) != [(session_id, pb.RUN_STATE_WAITING_FOR_INPUT)]:
        assert time.monotonic() < deadline, "the run is listed as waiting"
        await asyncio.sleep(0.02)
    return run_id, waiting


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value.code()


async def test_an_approval_and_an_external_result_answered_over_grpc(alice: StreamClient) -> None:
    OPS_DROPS.clear()
    run_id, waiting = await _waiting(alice, "s1")
    calls = [(c.tool_call_id, c.tool_name, dict(c.args), c.kind) for c in input_calls(waiting)]
    assert calls == [
        ("c1", "drop_db", {"name": "staging"}, pb.DEFERRED_CALL_KIND_APPROVAL),
        ("c2", "page", {"msg": "db"}, pb.DEFERRED_CALL_KIND_EXTERNAL),
    ]
    assert waiting.deadline_unix_ms > time.time() * 1000
    held = await alice.respond("s1", run_id, [approve("c1")])
    assert (held.continued, list(held.pending_call_ids)) == (False, ["c2"])
    done = await alice.respond("s1", run_id, [external_result("c2", {"ack": True})])
    assert done.continued
    rest = await _until(alice, "s1", _ends, after=waiting.id)
    text = "".join(e.content for e in rest if e.part_kind == pb.PART_KIND_TEXT)
    assert text == "done: drop_db=dropped staging; page={'ack': True}"
    assert OPS_DROPS == ["staging"], "the approved tool ran once"
    assert (await alice.respond("s1", run_id, [external_result("c2", {"ack": True})])).continued, "a retry"
    assert await _states(alice) == []


async def test_a_denial_and_a_retry_reach_the_model(alice: StreamClient) -> None:
    OPS_DROPS.clear()
    run_id, waiting = await _waiting(alice, "s2")
    answers = [deny("c1", "not on Fridays"), retry("c2", "pager down")]
    assert (await alice.respond("s2", run_id, answers)).continued
    rest = await _until(alice, "s2", _ends, after=waiting.id)
    outcomes = {e.tool_call_id: e.outcome for e in rest if e.part_kind_name in ("tool-return", "retry-prompt")}
    assert outcomes["c1"] == pb.TOOL_OUTCOME_DENIED
    text = "".join(e.content for e in rest if e.part_kind == pb.PART_KIND_TEXT)
    assert "not on Fridays" in text
    assert "pager down" in text
    assert OPS_DROPS == []


async def test_respond_status_codes(server: RunningServer, alice: StreamClient) -> None:
    run_id, _ = await _waiting(alice, "s3")
    assert await _code(alice.respond("s3", run_id, [approve("nope")])) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(alice.respond("s3", run_id, [approve("c2")])) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(alice.respond("s3", run_id, [])) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(alice.respond("s3", "other", [approve("c1")])) == grpc.StatusCode.NOT_FOUND
    async with StreamClient(f"127.0.0.1:{server.port}", token="bob-token") as bob:
        assert await _code(bob.respond("s3", run_id, [approve("c1")])) == grpc.StatusCode.NOT_FOUND
    await alice.respond("s3", run_id, [approve("c1")])
    assert await _code(alice.respond("s3", run_id, [deny("c1")])) == grpc.StatusCode.FAILED_PRECONDITION
    assert await _code(alice.run("ops", "s3", "again")) == grpc.StatusCode.ALREADY_EXISTS


async def test_listen_stays_open_through_the_wait_and_an_answer_on_another_replica_goes_on(
    server: RunningServer, alice: StreamClient, redis_url: str, settings: Settings
) -> None:
    """The stream of a waiting run gets heartbeats, and the dead-run check (after 1 s of silence) leaves it open;
    an answer sent to another replica, whose worker may take the run on, continues it in the same stream."""
    OPS_DROPS.clear()
    run_id, waiting = await _waiting(alice, "s4")
    config = ServerSettings(
        redis_url=redis_url, port=0, agents={"ops": "grpc_agents:ops"}, tokens=["alice-token=1:1"],
        heartbeat_interval=0.3, shutdown_grace=0.5,
    )  # fmt: skip
    request = pb.ListenRequest(session_id="s4", after_event_id=waiting.id)
    heartbeats, events = 0, []
    async with (
        running_server(config, settings=settings) as other,
        StreamClient(f"127.0.0.1:{other.port}", token="alice-token") as replica,
    ):
        async with asyncio.timeout(WITHIN):
            async for response in alice.stub.Listen(request, metadata=alice.metadata):
                if response.HasField("heartbeat"):
                    heartbeats += 1
                    if heartbeats == 8:  # 2.4 s of silence: past the dead-run check, twice
                        await replica.respond("s4", run_id, [approve("c1"), external_result("c2", "ok")])
                    continue
                events.append(response.event)
                if response.event.type == pb.EVENT_TYPE_END:
                    break
    assert heartbeats >= 8
    assert [e.type for e in events if e.type != pb.EVENT_TYPE_EVENT] == [pb.EVENT_TYPE_END], "no error: not lost"
    assert {e.tool_call_id for e in events if e.part_kind == pb.PART_KIND_TOOL_RETURN} == {"c1", "c2"}
    assert OPS_DROPS == ["staging"]
