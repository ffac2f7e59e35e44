"""Live flags as leases: `q()` lists live sessions without a scan, lost leases stop their run."""

from __future__ import annotations

import asyncio

import pytest
from pydantic_ai import Agent
from redis.asyncio import Redis

from pydantic_ai_stream import AgxCanceledError, LeaseLostError, Runtime, SessionBusyError, Settings, q, run
from pydantic_ai_stream._store.results import LeaseState, OpenState
from pydantic_ai_stream._write.lease import Lease, LeaseKeeper
from support import Collector, MemorySession, ScopedDeps, has_text, scripted_model, wait_renewed


async def _scan_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("scan", "keys"))


async def test_q_lists_live_sessions_without_scanning(redis: Redis, runtime: Runtime) -> None:
    gates = {sid: asyncio.Event() for sid in ("a", "b", "c")}
    tasks, listeners = {}, []
    for sid, gate in gates.items():
        deps = ScopedDeps.on(runtime, user_id=5, session_id=sid)
        listener = Collector(ScopedDeps.on(runtime, user_id=5, session_id=sid))
        listeners.append(listener)
        agent = Agent(scripted_model(tokens=["x"], gate=gate))
        tasks[sid] = asyncio.create_task(run(MemorySession(session_id=sid), agent, "hi", deps))
        await listener.wait_for(has_text("x"))
    other_user = ScopedDeps.on(runtime, user_id=6, session_id="z")
    await other_user.start()

    scans = await _scan_calls(redis)
    assert [s async for s in q(redis, 1, 5, runtime=runtime)] == [(1, 5, "a"), (1, 5, "b"), (1, 5, "c")]
    assert [s async for s in q(redis, 1, 6, runtime=runtime)] == [(1, 6, "z")]
    assert [s async for s in q(redis, 2, 5, runtime=runtime)] == []
    assert await _scan_calls(redis) == scans

    # A cancelled session leaves the list at once, a finished one when it ends.
    assert await ScopedDeps.on(runtime, user_id=5, session_id="a").cancel()
    assert [s async for s in q(redis, 1, 5, runtime=runtime)] == [(1, 5, "b"), (1, 5, "c")]
    gates["b"].set()
    await tasks["b"]
    with pytest.raises(AgxCanceledError):
        await tasks["a"]
    assert [s async for s in q(redis, 1, 5, runtime=runtime)] == [(1, 5, "c")]
    gates["c"].set()
    await tasks["c"]
    await other_user.stop()
    assert (
        [s async for s in q(redis, 1, 5, runtime=runtime)] == [] == [s async for s in q(redis, 1, 6, runtime=runtime)]
    )
    for listener in listeners:
        assert (await listener.done())[-1]["type"] == "end"


async def test_a_run_that_loses_its_lease_stops_without_saving(redis: Redis, settings: Settings) -> None:
    fast = Settings(redis_prefix=settings.redis_prefix, lease_renew_interval=0.05)
    async with Runtime(redis=redis, settings=fast) as runtime:
        gate = asyncio.Event()
        deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
        session = MemorySession(session_id="s1")
        listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
        task = asyncio.create_task(run(session, Agent(scripted_model(tokens=["x"], gate=gate)), "hi", deps))
        await listener.wait_for(has_text("x"))
        # As if the process had stalled past its lease: the flag expires and a listener ends the stream.
        await redis.delete(deps.key_live())
        with pytest.raises(AgxCanceledError) as stopped:
            await asyncio.wait_for(task, 5)
        assert isinstance(stopped.value.__cause__, LeaseLostError), "stopped by its token, for a lost lease"
        assert session.saves == 0
        events = await listener.done()
        assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [
            ("error", "run lost"),
            ("end", None),
        ]
        assert [s async for s in q(redis, 1, 1, runtime=runtime)] == []


async def test_is_live_follows_the_run(runtime: Runtime) -> None:
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    assert not await deps.is_live()
    await deps.start()
    assert await deps.is_live()
    await deps.add_info({"step": 1})
    assert await ScopedDeps.on(runtime, user_id=1, session_id="s1").cancel()
    assert not await deps.is_live()
    await deps.stop()
    events = [e async for e in deps.listen(serialize=False)]
    assert [e["type"] for e in events] == ["begin", "info", "end"]  # type: ignore[index]
    assert events[1]["body"] == {"step": 1}  # type: ignore[index]


async def test_a_reused_deps_gets_a_new_run_id_per_run(runtime: Runtime) -> None:
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    run_ids = []
    for _ in range(2):
        await deps.start()
        run_ids.append(deps.run_id)
        await deps.stop()
    assert len(set(run_ids)) == 2
    chosen = ScopedDeps.on(runtime, user_id=1, session_id="s2", run_id="mine")
    await chosen.start()
    assert chosen.run_id == "mine"
    await chosen.stop()


async def test_a_retried_open_is_the_same_open(redis: Redis, runtime: Runtime) -> None:
    # A client that re-sends a call whose reply was lost must see it opened, not as a busy session or a
    # second start of its run; another start of the same run finds it.
    stream = ScopedDeps.on(runtime, user_id=1, session_id="s1").handle().stream
    begin = {"session_id": "s1", "run_id": "r1"}
    state, first = await stream.open(run_id="r1", lease_ms=3000, begin=begin, nonce="n1")
    assert state is OpenState.OPENED
    assert await stream.open(run_id="r1", lease_ms=3000, begin=begin, nonce="n1") == (OpenState.OPENED, first)
    assert await stream.open(run_id="r1", lease_ms=3000, begin=begin, nonce="n2") == (OpenState.EXISTS, first)
    r2 = {"session_id": "s1", "run_id": "r2"}
    assert await stream.open(run_id="r2", lease_ms=3000, begin=r2, nonce="n3") == (OpenState.BUSY, "")
    r10 = {"session_id": "s1", "run_id": "r10"}
    assert await stream.open(run_id="r10", lease_ms=3000, begin=r10, nonce="n4") == (OpenState.BUSY, "")
    assert await redis.xlen(stream.keys.stream) == 1


async def test_a_refused_start_does_not_stop_the_lease_of_a_start_in_flight(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    # Another process holds s2. Here a start on s2 is refused while a run on s1 is between taking its
    # flag and holding its lease: the process's keeper must stay up and renew s1's lease.
    fast = Settings(redis_prefix=settings.redis_prefix, lease_ttl=1.0, lease_renew_interval=0.05)
    other = Redis.from_url(redis_url)
    async with Runtime(redis=other, settings=fast) as elsewhere, Runtime(redis=redis, settings=fast) as runtime:
        holder = ScopedDeps.on(elsewhere, user_id=1, session_id="s2")
        await holder.start()
        gate = asyncio.Event()
        deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
        session = MemorySession(session_id="s1")
        listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
        refused = ScopedDeps.on(runtime, user_id=1, session_id="s2")
        winner = asyncio.create_task(run(session, Agent(scripted_model(tokens=["x"], gate=gate)), "hi", deps))
        with pytest.raises(SessionBusyError):
            await refused.start()
        await listener.wait_for(has_text("x"))
        await wait_renewed(redis, deps.key_live(), past=fast.lease_ttl)
        gate.set()
        await asyncio.wait_for(winner, 5)
        events = await listener.done()
        assert [e["type"] for e in events if e["type"] in ("begin", "error", "end")] == ["begin", "end"]
        assert session.saves == 1
        await holder.stop()
    await other.aclose()


async def test_the_lease_keeper_stops_though_a_renewal_dropped_its_cancel(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis call may drop a cancel as it completes (Python 3.11's `asyncio.wait_for`, which redis-py sends
    each command through): the keeper's tasks still end once it holds no lease, rather than renewing nothing
    for ever (one more task per idle spell, and a runtime's close that never returned)."""
    settings.lease_renew_interval = 0.02
    entered, dropped = asyncio.Event(), asyncio.Event()

    async def renew_all(keeper: LeaseKeeper, leases: list[Lease]) -> list[LeaseState]:
        entered.set()
        if not dropped.is_set():
            try:
                await asyncio.sleep(3600)  # a renewal in flight
            except asyncio.CancelledError:
                dropped.set()  # it returns as if the cancel had come a moment later
        return []

    monkeypatch.setattr(LeaseKeeper, "_renew_all", renew_all)
    async with Runtime(redis=redis, settings=settings) as runtime:
        await runtime.leases.ready()
        keeping = [t for t in asyncio.all_tasks() if "LeaseKeeper" in repr(t.get_coro())]
        await asyncio.wait_for(entered.wait(), 10)
        runtime.leases.release(None)  # the last run let go: the keeper stops
        _, going_on = await asyncio.wait(keeping, timeout=10)
    assert dropped.is_set(), "the keeper was stopped mid-renewal"
    assert not going_on, "a task of the keeper went on"
