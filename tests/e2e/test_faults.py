"""Redis faults under a live gRPC server: stalls, restarts, killed and idle-closed connections."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis

from conftest import RedisServer
from pydantic_ai_stream import RedisSession, Runtime, Settings
from pydantic_ai_stream._read import hub as _hub
from pydantic_ai_stream._read import notices as _notices
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import Collector, ScopedDeps, listened_run, server_keys, status_of


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the test's own to break the server's Redis with."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


TOKENS = 40


@dataclass
class Pace:
    """Where the hosted `paced` agent waits: after each token in `gates`, until the test opens it."""

    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    reached: dict[int, asyncio.Event] = field(default_factory=dict)

    def at(self, *tokens: int) -> None:
        for token in tokens:
            self.gates[token], self.reached[token] = asyncio.Event(), asyncio.Event()


pace = Pace()


async def _paced(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for i in range(TOKENS):
        yield f"t{i} "
        if i in pace.gates:
            pace.reached[i].set()
            await pace.gates[i].wait()


paced = Agent(FunctionModel(stream_function=_paced), name="paced")


@pytest.fixture
async def server(redis_server: RedisServer, settings: Settings) -> AsyncIterator[RunningServer]:
    global pace
    pace = Pace()
    config = ServerSettings(
        redis_url=f"{redis_server.url}?client_name=server",
        port=0,
        agents={"stalling": "grpc_agents:stalling", "paced": "test_faults:paced"},
    )
    async with running_server(config, settings=settings) as running:
        yield running


async def _until(events: AsyncIterator[pb.Event], text: str) -> None:
    async for event in events:
        if text in (event.content, event.content_delta):
            return
    raise AssertionError(f"the stream ended before {text!r}")


async def test_a_run_sent_while_redis_stalls_is_accepted_once_it_answers(server: RunningServer, admin: Redis) -> None:
    # A Run is accepted when its `begin` and job are in Redis: a stall delays it (a caller's deadline
    # bounds it, next test), and it neither fails as UNKNOWN nor runs twice.
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        started = await client.run("demo", "s1", "hi", timeout=None)
        events = [event async for event in client.listen("s1")]
        assert [e.type_name for e in events if e.type_name != "event"] == ["begin", "end"]
        assert events[0].id == started.begin_event_id
        assert await client.list_active() == []


async def test_run_honours_the_callers_deadline_while_redis_stalls(server: RunningServer, admin: Redis) -> None:
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        await client.run("stalling", "s0", "go")  # the process is ready for runs: the next start goes to Redis
        await _until(client.listen("s0"), "hard ")
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        assert await status_of(client.run("stalling", "s1", "go", timeout=0.3)) == grpc.StatusCode.DEADLINE_EXCEEDED
        await admin.ping()
        # The call was cancelled with its caller: no run was started once Redis answered again.
        assert await client.list_active() == ["s0"]
        assert await admin.exists(server_keys(server, "s1").stream) == 0
        assert await client.cancel("s0") is True


async def _run_done(server: RunningServer, timeout: float = 15) -> float:
    """Wait for the server's runs to end; returns when, as `time.monotonic()`."""
    assert server.worker is not None
    async with asyncio.timeout(timeout):
        await server.worker.join()
    return time.monotonic()


async def _assert_complete(admin: Redis, server: RunningServer) -> None:
    """Session s1's stream holds the whole run once, in order, ended once; the conversation was saved."""
    key = server_keys(server, "s1").stream
    entries = [(fields[b"type"].decode(), json.loads(fields[b"body"])) for _, fields in await admin.xrange(key)]
    assert [t for t, _ in entries if t != "event"] == ["begin", "end"], entries
    deltas = [b.get("content", "") + b.get("content_delta", "") for t, b in entries if b.get("part_kind") == "text"]
    assert "".join(deltas) == "".join(f"t{i} " for i in range(TOKENS))
    assert len(deltas) == TOKENS  # no token written twice
    session = RedisSession(redis=admin, runtime=server.servicer.runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    assert session.msgs, "saved"
    assert f"t{TOKENS - 1} " in session.msgs_to_json().decode()


async def test_a_redis_restart_mid_run_loses_and_repeats_nothing(server: RunningServer, redis_server: RedisServer,
                                                                   admin: Redis) -> None:  # fmt: skip
    pace.at(10)
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        started = time.monotonic()
        await client.run("paced", "s1", "go")
        listening = asyncio.create_task(_listen(client, "s1"))  # connected through the restart
        await asyncio.wait_for(pace.reached[10].wait(), 5)
        await asyncio.to_thread(redis_server.stop)
        pace.gates[10].set()  # the rest of the run is written while Redis is down
        await asyncio.to_thread(time.sleep, 1.0)  # the outage (not a synchronisation)
        await asyncio.to_thread(redis_server.start)
        took = await _run_done(server) - started
        await _assert_complete(admin, server)
        during = await asyncio.wait_for(listening, 15)
        after = [e.id async for e in client.listen("s1")]  # a listener after the fault gets it all, once
    stream = await _stream_ids(admin, server_keys(server, "s1").stream)
    assert during == after == stream
    print(f"run with a 1 s Redis restart took {took:.2f} s")


async def _listen(client: StreamClient, session_id: str) -> list[str]:
    return [event.id async for event in client.listen(session_id)]


async def _stream_ids(admin: Redis, key: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await admin.xrange(key)]


async def test_killed_connections_mid_run_lose_and_repeat_nothing(server: RunningServer, admin: Redis) -> None:
    kills = (5, 15, 25, 35)
    pace.at(*kills)
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        await client.run("paced", "s1", "go")
        listening = asyncio.create_task(_listen(client, "s1"))  # its reader's connection is killed too
        for token in kills:
            await asyncio.wait_for(pace.reached[token].wait(), 5)
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            pace.gates[token].set()
        await _run_done(server)
        assert await asyncio.wait_for(listening, 15) == await _stream_ids(admin, server_keys(server, "s1").stream)
    await _assert_complete(admin, server)


async def test_redis_closing_idle_connections_loses_nothing(server: RunningServer, admin: Redis) -> None:
    await admin.config_set("timeout", 1)
    pace.at(20)
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        await client.run("paced", "s1", "go")
        await asyncio.wait_for(pace.reached[20].wait(), 5)
        await asyncio.gather(*(client.list_active() for _ in range(20)))  # the pool opens all its connections
        ids = await _server_connections(admin)
        deadline = time.monotonic() + 10
        while ids <= await _server_connections(admin):  # until Redis has closed the idle ones
            assert time.monotonic() < deadline, "Redis closed no idle connection"
            await asyncio.sleep(0.05)
        pace.gates[20].set()
        # Calls that take every pooled connection, the stale ones too, while the run writes.
        assert await asyncio.gather(*(client.list_active() for _ in range(20)))
        await _run_done(server)
        assert await client.list_active() == []
    await _assert_complete(admin, server)


async def _server_connections(admin: Redis) -> set[str]:
    return {c["id"] for c in await admin.client_list() if c.get("name") == "server"}


async def test_health_follows_redis(server: RunningServer, redis_server: RedisServer) -> None:
    async def status_becomes(status: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel, asyncio.timeout(10):
            async for reply in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="")):
                if reply.status == status:
                    return

    await status_becomes(health_pb2.HealthCheckResponse.SERVING)
    await asyncio.to_thread(redis_server.stop)
    await status_becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
    await asyncio.to_thread(redis_server.start)
    await status_becomes(health_pb2.HealthCheckResponse.SERVING)


async def test_a_stalled_subscriber_is_dropped_and_its_streams_heard_again(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, admin: Redis, settings: Settings
) -> None:
    """Redis stops answering (`DEBUG SLEEP`) for longer than the stream hub waits for a ping's answer: the hub
    drops its subscriber connection, subscribes again on a new one, and the entries written after come when
    written (the reads of every stream are off here), each once."""
    monkeypatch.setattr(_notices, "PING_EVERY", 0.2)
    monkeypatch.setattr(_notices, "PING_TIMEOUT", 0.5)
    monkeypatch.setattr(_hub, "FULL_READ_EVERY", 3600)  # only as a loop starts or re-opens a connection
    client = Redis.from_url(redis_server.url)
    async with Runtime(redis=client, settings=settings) as runtime:
        owner, listener = await listened_run(runtime)
        hub = runtime.hub
        assert hub is not None
        deadline = time.monotonic() + 30
        while (before := hub._notices._connection) is None or await _subscribers(admin, owner.key()) != 1:
            assert time.monotonic() < deadline, "the hub did not subscribe"
            await asyncio.sleep(0.05)
        await admin.execute_command("DEBUG", "SLEEP", 1.5)
        while hub._notices._connection in (None, before) or await _subscribers(admin, owner.key()) != 1:
            assert time.monotonic() < deadline, "the hub did not subscribe again"
            await asyncio.sleep(0.05)
        await _each_info_once(owner, listener, admin, range(3))
    await client.aclose()


async def test_a_read_outlasting_its_bound_is_dropped_and_read_again(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    redis_server: RedisServer,
    admin: Redis,
    settings: Settings,
) -> None:
    """Redis stops answering (`DEBUG SLEEP`) while a read of the stream hub is in flight, for longer than the hub
    lets a read take (`READ_TIMEOUT`): the hub drops the read's connection, reads again on a new one from each
    stream's cursor, and its listener gets every entry once, also those written while Redis slept."""
    monkeypatch.setattr(_hub, "READ_TIMEOUT", 0.3)  # ticks (0.25 s) to spare within the sleep
    monkeypatch.setattr(_hub, "FULL_READ_EVERY", 0.05)  # a read goes out at every tick, so one meets the sleep
    monkeypatch.setattr(_notices, "PING_TIMEOUT", 3600)  # the subscriber connection is kept through the sleep
    client = Redis.from_url(redis_server.url)
    async with Runtime(redis=client, settings=settings) as runtime:
        owner, listener = await listened_run(runtime)
        with caplog.at_level("WARNING", logger=_hub.__name__):
            # Short of the run's lease, past the bound:
            sleep = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", 2))
            await owner.add_info({"i": 0})
            flushed = asyncio.create_task(owner.flush())  # queued behind the sleep
            await sleep
            await flushed
            await listener.wait_for(lambda e: e["type"] == "info" and e["body"] == {"i": 0}, timeout=30)
        assert any("got no answer" in r.getMessage() for r in caplog.records), "no read outlasted its bound"
        await _each_info_once(owner, listener, admin, range(1, 3))
    await client.aclose()


async def _each_info_once(owner: ScopedDeps, listener: Collector, admin: Redis, numbers: range) -> None:
    """Write an `info` for each of `numbers`, each seen by `listener` when written; end the run: the listener got
    every entry of the stream once, in order."""
    for i in numbers:
        await owner.add_info({"i": i})
        await owner.flush()
        await listener.wait_for(lambda e, i=i: e["type"] == "info" and e["body"] == {"i": i})  # type: ignore[misc]
    await owner.stop()
    events = await listener.done()
    ids = [entry_id.decode() for entry_id, _ in await admin.xrange(owner.key())]
    assert [e["id"] for e in events] == ids


async def _subscribers(admin: Redis, channel: str) -> int:
    """How many connections are subscribed to `channel`."""
    ((_, count),) = await admin.pubsub_numsub(channel)
    return int(count)
