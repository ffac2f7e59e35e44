"""`LiveRun`: the write side of one run: opened once per session, fenced by its lease, closed once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta
from redis.asyncio import Redis

from pydantic_ai_stream import LeaseLostError, RunExistsError, Runtime, SessionBusyError, SessionKeys, Settings
from pydantic_ai_stream._write.live import LiveRun


@pytest.fixture
async def runtime(redis: Redis) -> AsyncIterator[Runtime]:
    async with Runtime(redis=redis, settings=Settings(redis_prefix=f"l{uuid.uuid4().hex[:10]}")) as runtime:
        yield runtime
    await redis.delete(*[k async for k in redis.scan_iter(f"{runtime.settings.redis_prefix}:*")] or ["-"])


def _keys(runtime: Runtime, session_id: str = "s1") -> SessionKeys:
    return runtime.keys(scope_id=1, user_id=1, session_id=session_id)


async def test_a_run_writes_its_events_in_order_between_begin_and_end(redis: Redis, runtime: Runtime) -> None:
    live = await LiveRun.open(runtime, _keys(runtime), run_id="r1", body={"user_prompt": "hi", "run_id": "other"})
    await live.add_node_begin()
    await live.add_node_event(PartStartEvent(index=0, part=TextPart(content="a")))
    await live.add_node_event(PartDeltaEvent(index=0, delta=TextPartDelta(content_delta="b")))
    await live.add_node_end()
    await live.close(grace_ms=60_000)
    entries = await runtime.stream(_keys(runtime)).read_range(after="0-0", count=100)
    assert [e.type for e in entries] == ["begin", "event", "event", "event", "event", "end"]
    assert entries[0].body == {"session_id": "s1", "run_id": "r1", "user_prompt": "hi"}, "a body cannot rename the run"
    assert [e.body.get("event") for e in entries[1:5]] == ["llm-begin", "part_start", "part_delta", "llm-end"]
    assert entries[-1].body == {"run_id": "r1"}
    assert 0 < await redis.pttl(_keys(runtime).stream) <= 60_000
    assert not await redis.exists(_keys(runtime).live)
    assert runtime.leases.idle, "its lease was released"


async def test_a_session_opens_once(runtime: Runtime) -> None:
    live = await LiveRun.open(runtime, _keys(runtime), run_id="r1")
    with pytest.raises(RunExistsError) as retried:
        await LiveRun.open(runtime, _keys(runtime), run_id="r1")
    assert (retried.value.run_id, retried.value.begin_event_id) == ("r1", live.begin_event_id)
    with pytest.raises(SessionBusyError) as other:
        await LiveRun.open(runtime, _keys(runtime))
    assert not isinstance(other.value, RunExistsError)
    await live.close(grace_ms=1000)
    with pytest.raises(RunExistsError):  # ended, and its stream kept: still the same run
        await LiveRun.open(runtime, _keys(runtime), run_id="r1")
    assert runtime.leases.idle


async def test_a_run_whose_lease_was_taken_writes_nothing(redis: Redis, runtime: Runtime) -> None:
    live = await LiveRun.open(runtime, _keys(runtime), run_id="r1")
    await redis.set(_keys(runtime).live, "someone-else")
    await live.add("info", "test", {"i": 1})
    with pytest.raises(LeaseLostError):
        await live.flush()
    assert live.lost
    await live.close(grace_ms=1000)
    assert [e.type for e in await runtime.stream(_keys(runtime)).read_range(after="0-0", count=10)] == ["begin"]
    assert await redis.get(_keys(runtime).live) == b"someone-else", "the new holder's flag is left alone"
