"""The stream writer: in order, batched while a write is in flight, errors surfaced, fenced by the lease."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import LeaseLostError, Runtime
from pydantic_ai_stream._store.cluster import append_many
from pydantic_ai_stream._write.writer import StreamWriter
from support import ScopedDeps, evalsha_calls


async def _writer(runtime: Runtime) -> tuple[ScopedDeps, StreamWriter]:
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    await deps.start()
    assert deps.run_id is not None
    return deps, StreamWriter(
        stream=deps.handle().stream,
        run_id=deps.run_id,
        combiner=runtime.writes,
        last_id=deps.begin_event_id or "",
    )


async def test_entries_queued_during_a_write_go_in_one_round_trip_in_order(redis: Redis, runtime: Runtime) -> None:
    deps, writer = await _writer(runtime)
    before = await evalsha_calls(redis)
    for i in range(500):
        await writer.add("info", "test", {"i": i})
    await writer.flush()
    assert await evalsha_calls(redis) - before <= 2
    events = [e async for e in deps.listen(serialize=False, timeout=1)]
    assert [e["body"]["i"] for e in events if e["type"] == "info"] == list(range(500))  # type: ignore[index]
    await deps.stop()


async def test_backpressure_bounds_what_waits(redis: Redis, runtime: Runtime) -> None:
    deps, writer = await _writer(runtime)
    writer.max_pending = 10
    for i in range(100):
        await writer.add("info", "test", {"i": i})
        assert len(writer._pending) <= 10
    await writer.flush()
    assert await redis.xlen(deps.key()) == 101  # begin + 100
    await deps.stop()


async def test_a_lost_lease_fails_the_write_and_every_later_one(redis: Redis, runtime: Runtime) -> None:
    deps, writer = await _writer(runtime)
    await redis.delete(deps.key_live())
    await writer.add("info", "test", {"i": 0})
    with pytest.raises(LeaseLostError):
        await writer.flush()
    with pytest.raises(LeaseLostError):
        await writer.add("info", "test", {"i": 1})
    assert await redis.xlen(deps.key()) == 1  # only `begin`: nothing written after the lease went
    await deps.stop()


async def _writers(runtime: Runtime, n: int) -> list[tuple[ScopedDeps, StreamWriter]]:
    pairs = []
    for i in range(n):
        deps = ScopedDeps.on(runtime, user_id=1, session_id=f"s{i}")
        await deps.start()
        assert deps.run_id is not None
        pairs.append(
            (
                deps,
                StreamWriter(
                    stream=deps.handle().stream,
                    run_id=deps.run_id,
                    combiner=runtime.writes,
                    last_id=deps.begin_event_id or "",
                ),
            )
        )
    return pairs


async def test_runs_writing_at_once_share_round_trips(redis: Redis, runtime: Runtime) -> None:
    pairs = await _writers(runtime, 20)
    before = await evalsha_calls(redis)

    async def produce(writer: StreamWriter) -> None:
        for i in range(50):
            await writer.add("info", "test", {"i": i})
            await asyncio.sleep(0)  # let the others (and the write in flight) run: many runs at once

    await asyncio.gather(*(produce(writer) for _, writer in pairs))
    for _, writer in pairs:
        await writer.flush()
    assert await evalsha_calls(redis) - before < 1000 / 10, "1,000 entries, far fewer round trips"
    for deps, _ in pairs:
        await deps.stop()
        events = [e async for e in deps.listen(serialize=False)]
        assert [e["body"]["i"] for e in events if e["type"] == "info"] == list(range(50))  # type: ignore[index]


async def test_a_lost_lease_fails_only_its_own_run_in_a_shared_write(redis: Redis, runtime: Runtime) -> None:
    (lost, lost_writer), (kept, kept_writer) = await _writers(runtime, 2)
    await redis.delete(lost.key_live())
    before = await evalsha_calls(redis)
    await lost_writer.add("info", "test", {"i": 0})
    await kept_writer.add("info", "test", {"i": 0})
    with pytest.raises(LeaseLostError):
        await lost_writer.flush()
    await kept_writer.flush()
    assert await evalsha_calls(redis) - before == 1, "both went in one write"
    assert await redis.xlen(lost.key()) == 1  # only `begin`
    assert await redis.xlen(kept.key()) == 2
    await kept.stop()
    await lost.stop()


async def test_a_re_sent_write_or_close_writes_nothing_twice(redis: Redis, runtime: Runtime) -> None:
    # What a retrying client sends again when a reply was lost: the same call, the same arguments.
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    await deps.start()
    assert deps.run_id is not None
    assert deps.begin_event_id is not None
    stream = deps.handle().stream
    batch = [("info", "test", {"i": 0}), ("info", "test", {"i": 1})]
    [written] = await append_many(redis, [(stream, deps.run_id, deps.begin_event_id, batch)])
    assert written is not None
    assert await append_many(redis, [(stream, deps.run_id, deps.begin_event_id, batch)]) == [written]
    [after] = await append_many(redis, [(stream, deps.run_id, written, [("info", "test", {"i": 2})])])
    end = {"run_id": deps.run_id}
    assert await stream.close(run_id=deps.run_id, grace_ms=1000, end=end)
    assert await stream.close(run_id=deps.run_id, grace_ms=1000, end=end)  # its own `end`: closed, not lost
    entries = await redis.xrange(deps.key())
    assert [fields[b"type"] for _, fields in entries] == [b"begin", b"info", b"info", b"info", b"end"]
    assert entries[3][0].decode() == after
    assert not await stream.close(run_id="another", grace_ms=1000, end={"run_id": "another"})
    await deps.stop()
