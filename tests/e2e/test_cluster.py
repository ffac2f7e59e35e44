"""The library on a real 3-master Redis Cluster: hash-tagged keys, scripts, Pub/Sub cancel, q()."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from grpc_agents import OPS_DROPS, ops
from pydantic_ai import Agent
from redis.asyncio import Redis, RedisCluster
from redis.cluster import key_slot

from pydantic_ai_stream import (
    AgxCanceledError,
    Attachment,
    QueueFullError,
    RedisSession,
    Runtime,
    SessionHandle,
    Settings,
    ToolAnswer,
    live_sessions,
    q,
    run,
)
from pydantic_ai_stream._core.keys import queued_key, ready_key, scope_jobs_key, scopes_key, turn_key
from pydantic_ai_stream._core.submission import Submission
from pydantic_ai_stream.server import Worker
from support import (
    CANCEL_WITHIN,
    Collector,
    MemorySession,
    ScopedDeps,
    bodies,
    has_text,
    renew_slowly,
    scripted_model,
    text_of,
)


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    # redis-py's asyncio cluster client fails concurrent first commands unless initialized first.
    client = await RedisCluster.from_url(cluster_url).initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def runtime(cluster: RedisCluster, settings: Settings) -> AsyncIterator[Runtime]:
    """The test's runtime on the cluster, with its `settings`."""
    async with Runtime(redis=cluster, settings=settings) as runtime:
        yield runtime


def _weather_agent() -> Agent[ScopedDeps, str]:
    agent = Agent(scripted_model(tokens=["It is ", "sunny."], tool="get_weather", tool_args='{"city": "Paris"}'))

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    return agent  # type: ignore[return-value]


async def test_a_run_with_a_tool_on_the_cluster(cluster: RedisCluster, runtime: Runtime) -> None:
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    keys = deps.keys()
    assert keys.stream.startswith("{")
    assert len({key_slot(k.encode()) for k in (keys.stream, keys.live, keys.active, keys.msgs)}) == 1
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    session = RedisSession(redis=cluster, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await run(session, _weather_agent(), "weather?", deps)
    events = await listener.done()
    assert [events[0]["type"], events[-1]["type"]] == ["begin", "end"]
    assert bodies(events, part_kind="tool-call")[0]["args"] == {"city": "Paris"}
    assert bodies(events, part_kind="tool-return")[0]["content"] == "sunny in Paris"
    assert text_of(events) == "It is sunny."
    stored = RedisSession(redis=cluster, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await stored.load()
    assert len(stored.msgs) == 4


async def test_q_and_cancel_across_clients(cluster: RedisCluster, cluster_url: str, runtime: Runtime) -> None:
    renew_slowly(runtime.settings)
    tasks, listeners = {}, {}
    for sid in ("a", "b", "c"):
        listeners[sid] = Collector(ScopedDeps.on(runtime, user_id=9, session_id=sid))
        agent = Agent(scripted_model(tokens=["x"], stall=True))
        tasks[sid] = asyncio.create_task(
            run(MemorySession(session_id=sid), agent, "go", ScopedDeps.on(runtime, user_id=9, session_id=sid))
        )
        await listeners[sid].wait_for(has_text("x"))
    assert [s async for s in q(cluster, 1, 9, runtime=runtime)] == [(1, 9, "a"), (1, 9, "b"), (1, 9, "c")]
    listed = await live_sessions(runtime, scope_id=1, user_id=9)
    assert [(r.session_id, r.started_ms > 0) for r in listed] == [("a", True), ("b", True), ("c", True)], "and when"

    other = await RedisCluster.from_url(cluster_url).initialize()  # another process's client
    async with Runtime(redis=other, settings=runtime.settings) as elsewhere:
        for sid in ("a", "b", "c"):
            started = time.monotonic()
            assert await ScopedDeps.on(elsewhere, user_id=9, session_id=sid).cancel() is True
            with pytest.raises(AgxCanceledError):
                await asyncio.wait_for(tasks[sid], 5)
            assert time.monotonic() - started < CANCEL_WITHIN, "by Pub/Sub, not left to the next renewal"
            events = await listeners[sid].done()
            assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [("error", "canceled"), ("end", None)]
    await other.aclose()
    assert [s async for s in q(cluster, 1, 9, runtime=runtime)] == []


async def test_many_users_on_many_slots_at_once(runtime: Runtime) -> None:
    users = range(20, 30)
    slots = {key_slot(ScopedDeps.on(runtime, user_id=u, session_id="s").key().encode()) for u in users}
    assert len(slots) > 1
    listeners = [Collector(ScopedDeps.on(runtime, user_id=u, session_id="s")) for u in users]
    await asyncio.gather(
        *(
            run(
                MemorySession(session_id="s"),
                _weather_agent(),
                "hi",
                ScopedDeps.on(runtime, user_id=u, session_id="s"),
            )
            for u in users
        )
    )
    for listener in listeners:
        assert text_of(await listener.done()) == "It is sunny."


async def test_the_run_queue_and_its_workers_on_the_cluster(cluster: RedisCluster, runtime: Runtime) -> None:
    queue = runtime.queue
    prefix = runtime.settings.redis_prefix
    keys = (queue.key, queued_key(prefix, 1), scope_jobs_key(prefix, 1), scopes_key(prefix), turn_key(prefix))
    assert len({key_slot(k.encode()) for k in (*keys, ready_key(prefix))}) == 1, "the queue's scripts touch one slot"
    users = range(1, 7)  # sessions of several users: their keys spread over the nodes
    for user in users:
        stream = runtime.stream(runtime.keys(scope_id=1, user_id=user, session_id="s1"))
        await queue.submit(stream, Submission(agent="weather", body={"user_prompt": "weather?"}))
    # A run waiting behind user 6's queued run starts when that one is cancelled.
    sixth = SessionHandle.of(runtime, scope_id=1, user_id=6, session_id="s1")
    waiting = await sixth.submit(agent="weather", body={"user_prompt": "weather?"}, run_id="w", if_busy="enqueue")
    assert waiting.waiting
    assert await sixth.cancel(), "a queued run"
    async with Worker(runtime=runtime, agents={"weather": _weather_agent()}, concurrency=2):
        for user in users:
            handle = SessionHandle.of(runtime, scope_id=1, user_id=user, session_id="s1")
            events = [e async for e in handle.listen(serialize=False, timeout=10)]
            assert isinstance(events[-1], dict)
            assert text_of(events) == "It is sunny."  # type: ignore[arg-type]
            if user == 6:
                assert events[0]["body"]["run_id"] == "w"  # type: ignore[index]
    assert await cluster.zrange(queued_key(runtime.settings.redis_prefix, 1), 0, -1) == []
    assert await cluster.xlen(queue.key) == 0


async def test_a_runs_context_and_attachments_on_the_cluster(cluster: RedisCluster, runtime: Runtime) -> None:
    """Submitted through the library (`SessionHandle.submit`): the attachments are kept in the session's slot
    (the adopt script moves them into the run's checkpoint hash), and the run's end deletes them."""
    from grpc_agents import seeing_any

    handle = SessionHandle.of(runtime, scope_id=1, user_id=7, session_id="s1")
    keys = handle.keys
    assert (
        key_slot(keys.attachments("r1").encode())
        == key_slot(keys.stream.encode())
        == key_slot(keys.checkpoint.encode())
    )
    image = Attachment(data=b"\x89PNG" + bytes(50), media_type="image/png", name="a.png")
    await handle.submit(
        agent="seeing_any", body={"user_prompt": "look"}, run_id="r1", context={"n": 1}, attachments=[image]
    )
    assert await cluster.exists(keys.attachments("r1")), "kept until a worker adopts the run"
    async with Worker(runtime=runtime, agents={"seeing_any": seeing_any}):
        events = [e async for e in handle.listen(serialize=False, timeout=10)]
    assert isinstance(events[0], dict)
    assert events[0]["body"]["attachments"] == [
        {"kind": "image", "media_type": "image/png", "size": 54, "name": "a.png"}
    ]
    assert text_of(events).splitlines()[:3] == [
        'instructions=context {"n": 1}',
        "text=look",
        "binary=image/png:54:a.png",
    ]  # type: ignore[arg-type]
    assert not await cluster.exists(keys.attachments("r1"))
    assert not await cluster.exists(keys.checkpoint)
    full = dataclasses.replace(runtime.queue, max_queued=0)  # refused at the first of the cluster's steps
    other = runtime.stream(runtime.keys(scope_id=1, user_id=8, session_id="s1"))
    with pytest.raises(QueueFullError):
        await full.submit(other, Submission(agent="seeing_any", run_id="r2", attachments=[image]))
    assert not await cluster.exists(other.keys.attachments("r2")), "a refused run's attachments go"


async def test_a_run_waits_for_input_and_goes_on_on_the_cluster(runtime: Runtime) -> None:
    """The wait, the answers and the continuation's job (added in a second step: the queue's keys are in
    another slot than the session's) on a real 3-master cluster."""
    OPS_DROPS.clear()
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="w1")
    async with Worker(runtime=runtime, agents={"ops": ops}) as worker:
        run_id = (await handle.submit(agent="ops", body={"user_prompt": "clean up"})).run_id
        async with asyncio.timeout(20):
            async for entry in handle.listen(serialize=False, timeout=20):
                if isinstance(entry, dict) and entry["body"].get("event") == "input_required":
                    waiting_id = entry["id"]
                    break
            while True:  # the wait is recorded once the run closed (within the timeout above)
                if not worker.running and any(r.waiting for r in await live_sessions(runtime, scope_id=1, user_id=1)):
                    break
                await asyncio.sleep(0.02)
        answers = [ToolAnswer(tool_call_id="c1", approved=True), ToolAnswer(tool_call_id="c2", value="ok")]
        assert (await handle.respond(run_id, answers)).continued
        rest = [e async for e in handle.listen(after=waiting_id, serialize=False, timeout=20)]
    assert rest[-1]["type"] == "end"  # type: ignore[index]
    assert OPS_DROPS == ["staging"]


async def test_writes_on_the_cluster_tell_no_one(cluster: RedisCluster, cluster_url: str, runtime: Runtime) -> None:
    """On one Redis the scripts that write a stream publish on its channel (the stream hub's notices); a
    cluster's scripts do not: PUBLISH there reaches every node, and each listener reads on its own."""
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    node = cluster.get_nodes()[0]
    subscriber = Redis(host=node.host, port=node.port).pubsub()
    await subscriber.subscribe(deps.keys().stream)  # a cluster's PUBLISH comes to every node's subscribers
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    session = RedisSession(redis=cluster, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await run(session, _weather_agent(), "weather?", deps)
    assert text_of(await listener.done()) == "It is sunny."
    await subscriber.ping()  # answered after any message published before it
    kinds = []
    while (message := await subscriber.get_message(timeout=1.0)) is not None and message["type"] != "pong":
        kinds.append(message["type"])
    assert kinds == ["subscribe"], "nothing published on the stream's channel"
    await subscriber.aclose()
