"""`Runtime`: one owner for the background work of a Redis client; on exit nothing of it is left."""

from __future__ import annotations

import asyncio

import pytest
from pydantic_ai import Agent
from redis.asyncio import Redis

from pydantic_ai_stream import (
    AgxCanceledError,
    PydanticAIStreamError,
    RedisSession,
    Runtime,
    Settings,
    q,
    run,
    start_run,
)
from support import Collector, MemorySession, ScopedDeps, bodies, has_text, scripted_model


def _our_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and "pydantic_ai_stream" in repr(t.get_coro())]


async def _connections(redis: Redis, name: str) -> int:
    return sum(c.get("name") == name for c in await redis.client_list())


async def test_exiting_a_runtime_leaves_no_task_and_no_connection(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    client = Redis.from_url(redis_url, client_name="owned")
    async with Runtime(redis=client, settings=settings) as runtime:
        gate = asyncio.Event()
        deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
        task = asyncio.create_task(
            run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=["a ", "b "], gate=gate)), "hi", deps)
        )
        listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
        await listener.wait_for(has_text("b "))
        assert runtime.hub is not None
        assert not runtime.idle, "its reader, writes and lease keeper are at work"
        gate.set()
        await asyncio.wait_for(task, 5)
        assert (await listener.done())[-1]["type"] == "end"
    assert _our_tasks() == []
    await client.connection_pool.disconnect()  # the client's own pool is its owner's to close
    assert await _connections(redis, "owned") == 0, "the reader's and the cancel subscription's are closed"
    await client.aclose()


async def test_exiting_a_runtime_under_a_listener_ends_it_with_an_error(redis: Redis, runtime: Runtime) -> None:
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    task = asyncio.create_task(
        run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=["a "], stall=True)), "hi", deps)
    )
    async with Runtime(redis=redis, settings=runtime.settings) as listening:
        listener = ScopedDeps.on(listening, user_id=1, session_id="s1").listen_entries()
        async for entry in listener:
            if entry is not None and entry.body.get("content") == "a ":
                break
    with pytest.raises(PydanticAIStreamError, match="closed"):
        async for _ in listener:
            pass
    assert [t for t in _our_tasks() if "StreamHub" in repr(t.get_coro())] == []
    assert await deps.cancel()
    with pytest.raises(AgxCanceledError):
        await asyncio.wait_for(task, 5)


async def test_two_runtimes_with_their_own_settings_live_in_one_process(redis: Redis) -> None:
    mine = Settings(redis_prefix="mine", stream_retention=120)
    theirs = Settings(redis_prefix="theirs", stream_retention=240)
    async with Runtime(redis=redis, settings=mine) as a, Runtime(redis=redis, settings=theirs) as b:
        for runtime, word in ((a, "mine "), (b, "theirs ")):
            deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
            session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
            await run(session, Agent(scripted_model(tokens=[word])), "hi", deps)
        for runtime, word, retention in ((a, "mine ", 120), (b, "theirs ", 240)):
            deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
            events = [e async for e in deps.listen(serialize=False)]
            assert [b["content"] for b in bodies(events, part_kind="text")] == [word]  # type: ignore[arg-type]
            assert deps.key() == f"{runtime.settings.redis_prefix}:1:1:s1"
            assert 0 < await redis.ttl(deps.key()) <= retention
            assert await redis.exists(f"{runtime.settings.redis_prefix}:1:1:s1:msgs")
            assert [s async for s in q(redis, 1, 1, runtime=runtime)] == []
    await redis.delete(*[k async for k in redis.scan_iter("mine:*")], *[k async for k in redis.scan_iter("theirs:*")])


async def test_a_run_opened_on_a_runtime_ends_with_its_block(runtime: Runtime) -> None:
    keys = runtime.keys(scope_id=1, user_id=1, session_id="s1")
    async with runtime.open_run(keys, run_id="r1", body={"user_prompt": "hi"}) as live:
        await live.add("info", "developer", {"step": 1})
        assert await ScopedDeps.on(runtime, user_id=1, session_id="s1").is_live()
    assert not await ScopedDeps.on(runtime, user_id=1, session_id="s1").is_live()
    events = [e async for e in ScopedDeps.on(runtime, user_id=1, session_id="s1").listen(serialize=False)]
    assert [e["type"] for e in events] == ["begin", "info", "end"]  # type: ignore[index]


async def test_a_started_run_is_owned_by_its_runtime(redis: Redis, settings: Settings) -> None:
    async with Runtime(redis=redis, settings=settings) as runtime:
        deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
        agent = Agent(scripted_model(tokens=["a "], stall=True))
        task = await start_run(MemorySession(session_id="s1"), agent, "hi", deps)
        await Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1")).wait_for(has_text("a "))
    # The runtime's exit cancelled the run and waited for it: it ended as a cancelled run does.
    assert task.done()
    assert _our_tasks() == []
    async with Runtime(redis=redis, settings=settings) as reading:
        events = [e async for e in ScopedDeps.on(reading, user_id=1, session_id="s1").listen(serialize=False)]
    assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [  # type: ignore[index, union-attr]
        ("error", "canceled"),
        ("end", None),
    ]
