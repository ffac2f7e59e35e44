"""`Deps.listen`: replay, resume after an id, wait/timeout, trimmed cursors, retention."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pydantic_ai import Agent
from redis.asyncio import Redis

from pydantic_ai_stream import CursorExpiredError, InvalidIdError, Runtime, Settings, run
from support import Collector, MemorySession, ScopedDeps, has_text, scripted_model


async def _finished_run(runtime: Runtime, tokens: list[str]) -> list[dict]:
    await run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=tokens)), "hi", _deps(runtime))
    return [e async for e in _deps(runtime).listen(serialize=False)]  # type: ignore[misc]


def _deps(runtime: Runtime) -> ScopedDeps:
    return ScopedDeps.on(runtime, user_id=1, session_id="s1")


async def test_resume_after_any_id_misses_and_repeats_nothing(runtime: Runtime) -> None:
    events = await _finished_run(runtime, [f"t{i} " for i in range(20)])
    assert events[0]["type"] == "begin"
    assert events[-1]["type"] == "end"
    for k in (0, 5, len(events) - 2):
        resumed = [e async for e in _deps(runtime).listen(serialize=False, after=events[k]["id"])]
        assert resumed == events[k + 1 :]


async def test_serialized_events_are_json_with_their_id(runtime: Runtime) -> None:
    events = await _finished_run(runtime, ["a", "b"])
    serialized = [json.loads(e) async for e in _deps(runtime).listen()]  # type: ignore[arg-type]
    assert serialized == events
    assert all(set(e) == {"id", "type", "origin", "body"} for e in serialized)


async def test_resume_during_a_live_run_then_follow_it(runtime: Runtime) -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(
        run(
            MemorySession(session_id="s1"),
            Agent(scripted_model(tokens=["a ", "b "], gate=gate)),
            "hi",
            _deps(runtime),
        )
    )
    first = Collector(_deps(runtime))
    cursor = (await first.wait_for(has_text("a ")))["id"]
    second = Collector(_deps(runtime), after=cursor)
    await second.wait_for(has_text("b "))
    gate.set()
    await asyncio.wait_for(task, 5)
    full, resumed = await first.done(), await second.done()
    index = next(i for i, e in enumerate(full) if e["id"] == cursor)
    assert resumed == full[index + 1 :]


async def test_wait_gives_up_on_a_stream_that_never_appears(runtime: Runtime) -> None:
    started = time.monotonic()
    assert [e async for e in _deps(runtime).listen(wait=1)] == []
    assert 0.9 < time.monotonic() - started < 2.5


async def test_timeout_ends_listening_to_a_silent_run(runtime: Runtime) -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(
        run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=["a"], gate=gate)), "hi", _deps(runtime))
    )
    started = time.monotonic()
    events = [e async for e in _deps(runtime).listen(serialize=False, timeout=1)]
    assert 0.9 < time.monotonic() - started < 3
    assert events[0]["type"] == "begin"
    assert events[-1]["type"] == "event"
    gate.set()
    await asyncio.wait_for(task, 5)


async def test_a_trimmed_cursor_is_an_error_not_a_silent_gap(redis: Redis, runtime: Runtime) -> None:
    short = Settings(redis_prefix=runtime.settings.redis_prefix, stream_maxlen=100)
    async with Runtime(redis=redis, settings=short) as trimming:
        await run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=[f"{i} " for i in range(600)])), "hi",
                  _deps(trimming))  # fmt: skip
    kept = await redis.xrange(_deps(runtime).key())
    assert len(kept) < 400, "trimmed: the stream is bounded"
    assert kept[0][1][b"type"] != b"begin"
    for after in ("1-0", None):  # events after the cursor, or the run's start, are gone
        with pytest.raises(CursorExpiredError, match="trimmed"):
            async for _ in _deps(runtime).listen(after=after):
                pass
    resumed = [e async for e in _deps(runtime).listen(serialize=False, after=kept[0][0].decode())]
    assert [e["id"] for e in resumed] == [entry_id.decode() for entry_id, _ in kept[1:]]


async def test_a_malformed_cursor_is_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidIdError):
        async for _ in _deps(runtime).listen(after="not-an-id"):
            pass


async def test_streams_expire_after_the_retention(redis: Redis, settings: Settings) -> None:
    gate = asyncio.Event()
    kept_briefly = Settings(redis_prefix=settings.redis_prefix, stream_retention=120, lease_renew_interval=0.05)
    async with Runtime(redis=redis, settings=kept_briefly) as runtime:
        task = asyncio.create_task(
            run(
                MemorySession(session_id="s1"),
                Agent(scripted_model(tokens=["a"], gate=gate)),
                "hi",
                _deps(runtime),
            )
        )
        await Collector(_deps(runtime)).wait_for(has_text("a"))
        key = _deps(runtime).key()
        # While the run lives, its lease renewal keeps pushing the expiry forward; a dead run's
        # stream still goes away.
        assert 0 < await redis.ttl(key) <= 120
        await redis.expire(key, 5)
        deadline = time.monotonic() + 5
        while await redis.ttl(key) <= 5:
            assert time.monotonic() < deadline, "the renewal did not extend the stream's retention"
            await asyncio.sleep(0.01)
        assert await redis.ttl(key) <= 120
        gate.set()
        await asyncio.wait_for(task, 5)
        assert 0 < await redis.ttl(key) <= 120
        assert await redis.exists(_deps(runtime).key_live()) == 0


@pytest.mark.parametrize("live", [False, True])
async def test_a_listener_slower_than_its_timeout_gets_every_entry_not_a_timeout(live: bool, runtime: Runtime) -> None:
    """`timeout` bounds a silence, not how long the listener takes over a batch: one that dawdles past it between
    batches (a client its transport holds back) reads on, whether the stream ended or its run still writes."""
    owner = _deps(runtime)
    await owner.start()
    for i in range(60):
        await owner.add_info({"i": i})
    await owner.flush()
    if not live:
        await owner.stop()
    seen: list[int] = []
    batches = owner.handle().listen_batches(timeout=0.2)
    async for batch in batches:
        seen += [e.body["i"] for e in batch or () if e.type == "info"]
        if seen == list(range(60)):
            break
        await asyncio.sleep(0.3)  # the slow listener's own work on a batch, longer than `timeout`
    await batches.aclose()  # type: ignore[attr-defined]
    assert seen == list(range(60))
    if live:
        await owner.stop()
