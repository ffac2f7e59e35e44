"""`Worker`: executes queued runs, a bounded number at once, each once; stops claiming when told."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from redis.asyncio import Redis

from pydantic_ai_stream import QueueFullError, RedisSession, Runtime, SessionHandle, Settings
from pydantic_ai_stream._keys import queue_wake_key
from pydantic_ai_stream._live import LiveRun
from pydantic_ai_stream._queue import GROUP, RunQueue, Submitted
from pydantic_ai_stream._worker import Worker
from support import GatedModel


async def _submit(runtime: Runtime, session_id: str, agent: str = "gated") -> Submitted:
    stream = runtime.stream(runtime.keys(scope_id=1, user_id=1, session_id=session_id))
    return await runtime.queue.submit(stream, scope_id=1, user_id=1, agent=agent, body={"user_prompt": "hi"})


async def _events(runtime: Runtime, session_id: str) -> list[dict[str, Any]]:
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=session_id)
    return [e async for e in handle.listen(serialize=False, timeout=10)]  # type: ignore[misc]


def _outline(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["type"], e["body"].get("msg")) for e in events if e["type"] != "event"]


async def test_a_worker_runs_a_queued_run_to_its_end(redis: Redis, runtime: Runtime) -> None:
    model = GatedModel()
    model.gate.set()
    submitted = await _submit(runtime, "s1")
    async with Worker(runtime=runtime, agents={"gated": model.agent()}, concurrency=4) as worker:
        events = await _events(runtime, "s1")
        await worker.join()
    assert events[0]["id"] == submitted.begin_event_id
    assert _outline(events) == [("begin", None), ("end", None)]
    text = "".join(e["body"].get("content", "") + e["body"].get("content_delta", "") for e in events[1:-1])
    assert text == "hello world"
    session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    assert b"hello world" in session.msgs_to_json(), "the conversation is saved"
    assert await redis.xlen(runtime.queue.key) == 0, "its job is done"
    assert model.calls == 1


async def test_a_cancelled_queued_run_ends_at_once_and_never_runs(redis: Redis, runtime: Runtime) -> None:
    model = GatedModel()
    await _submit(runtime, "s1")
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    assert await handle.is_live()
    assert await handle.cancel()
    assert _outline(await _events(runtime, "s1")) == [("begin", None), ("error", "canceled"), ("end", None)]
    assert await runtime.queue.depth(1) == 0
    async with Worker(runtime=runtime, agents={"gated": model.agent()}) as worker:
        deadline = time.monotonic() + 5
        while await redis.xlen(runtime.queue.key):  # the worker takes its job and drops it
            assert time.monotonic() < deadline, "the worker did not take the job"
            await asyncio.sleep(0.01)
        await worker.join()
    assert model.calls == 0


async def test_a_worker_runs_at_most_its_concurrency_and_each_run_once(redis: Redis, runtime: Runtime) -> None:
    model = GatedModel()
    for i in range(5):
        await _submit(runtime, f"s{i}")
    agents = {"gated": model.agent()}
    async with Worker(runtime=runtime, agents=agents, concurrency=2), Worker(runtime=runtime, agents=agents):
        await model.wait_calls(5)  # the second worker took the rest
        model.gate.set()
        for i in range(5):
            assert _outline(await _events(runtime, f"s{i}")) == [("begin", None), ("end", None)]
    assert model.calls == 5
    assert model.most <= 2 + 3


async def test_concurrency_bounds_one_worker(runtime: Runtime) -> None:
    model = GatedModel()
    for i in range(4):
        await _submit(runtime, f"s{i}")
    async with Worker(runtime=runtime, agents={"gated": model.agent()}, concurrency=2) as worker:
        await model.wait_calls(2)
        assert worker.running == 2
        assert await runtime.queue.depth(1) == 2, "the rest wait in the queue"
        model.gate.set()
        await model.wait_calls(4)
        await worker.join()
    assert model.most == 2


async def test_an_agent_the_worker_does_not_host_ends_the_run_with_an_error(runtime: Runtime) -> None:
    await _submit(runtime, "s1", agent="elsewhere")
    async with Worker(runtime=runtime, agents={}):
        events = await _events(runtime, "s1")
    assert _outline(events) == [
        ("begin", None),
        ("error", "agent 'elsewhere' is not hosted by this worker"),
        ("end", None),
    ]


async def test_a_stopping_worker_cancels_its_runs_if_told_and_claims_no_more(redis: Redis, runtime: Runtime) -> None:
    model = GatedModel()
    await _submit(runtime, "s1")
    worker = Worker(runtime=runtime, agents={"gated": model.agent()}, concurrency=1)
    await worker.start()
    await model.wait_calls(1)
    await _submit(runtime, "s2")
    await worker.drain(0, hand_back=False)
    assert _outline(await _events(runtime, "s1")) == [("begin", None), ("error", "canceled"), ("end", None)]
    assert await runtime.queue.depth(1) == 1, "s2 still waits for a worker"
    assert await SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s2").is_live()
    assert model.calls == 1


async def test_a_stopping_worker_hands_its_runs_back_and_another_resumes_them(redis: Redis, settings: Settings) -> None:
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # leases a loaded machine still renews
    async with Runtime(redis=redis, settings=settings) as runtime:
        model = GatedModel()
        await _submit(runtime, "s1")
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        listening = handle.listen_entries(timeout=10)
        first = Worker(runtime=runtime, agents={"gated": model.agent()})
        await first.start()
        async for entry in listening:
            if entry is not None and entry.body.get("content") == "hello ":
                break
        await first.drain(0)  # a deploy: the run is let go, not ended
        assert not await redis.exists(handle.keys.live)
        assert await redis.get(handle.keys.durable) == f"{(await _run_id(handle))}:1".encode()
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            rest = [entry async for entry in listening if entry is not None]
        assert [
            (e.type, e.body.get("event")) for e in rest if e.type != "event" or e.body.get("event") == "resumed"
        ] == [
            ("event", "resumed"),
            ("end", None),
        ]
        assert model.calls == 2, "the second attempt calls the model again"


async def test_hand_backs_do_not_use_up_a_runs_attempts(redis: Redis, settings: Settings) -> None:
    """Three deploys in a row hand one run back, though it may be started twice (`max_attempts=2`): it goes
    on each time and ends; a worker's death still counts (the next one is out of attempts)."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # leases a loaded machine still renews
    settings.max_attempts = 2
    async with Runtime(redis=redis, settings=settings) as runtime:
        model = GatedModel()
        await _submit(runtime, "s1")
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        listening = handle.listen_entries(timeout=10)
        for deploy in range(3):
            worker = Worker(runtime=runtime, agents={"gated": model.agent()})
            await worker.start()
            await model.wait_calls(deploy + 1)
            await worker.drain(0)
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            entries = [entry async for entry in listening if entry is not None]
        assert [e.body["attempt"] for e in entries if e.type == "event" and e.body.get("event") == "resumed"] == [
            2,
            3,
            4,
        ]
        assert [e.type for e in entries if e.type != "event"] == ["begin", "end"]
        assert model.calls == 4


async def _run_id(handle: SessionHandle) -> str:
    [begin] = await handle.stream.read_range(after="0-0", count=1)
    return str(begin.body["run_id"])


async def test_a_job_whose_worker_died_before_adopting_its_run_is_taken_over(redis: Redis, settings: Settings) -> None:
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # a worker gone shows in ~1 s
    async with Runtime(redis=redis, settings=settings) as runtime:
        model = GatedModel()
        model.gate.set()
        await _submit(runtime, "s1")
        dead = queue_wake_key(settings.redis_prefix, "dead")
        await runtime.queue.create_group(wake=dead)
        [job] = await runtime.queue.claim(client=redis, consumer="dead", count=1, block_ms=1, wake=dead)
        started = time.monotonic()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            assert _outline(await _events(runtime, "s1")) == [("begin", None), ("end", None)]
        took = time.monotonic() - started
        assert model.calls == 1
        assert await redis.xpending(runtime.queue.key, GROUP) == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
        assert took < 5
        assert job.run_id


async def test_a_worker_keeps_the_jobs_it_runs_from_other_workers(redis: Redis, settings: Settings) -> None:
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # leases a loaded machine still renews
    async with Runtime(redis=redis, settings=settings) as runtime:
        model = GatedModel()
        await _submit(runtime, "s1")
        agents = {"gated": model.agent()}
        async with Worker(runtime=runtime, agents=agents), Worker(runtime=runtime, agents=agents):
            await model.wait_calls(1)
            await asyncio.sleep(1.5)  # the time being tested: 1.5 lease TTLs, past the idle limit of a dead worker
            [pending] = (await redis.xpending(runtime.queue.key, GROUP))["consumers"]
            assert pending["pending"] == 1
            model.gate.set()
            assert _outline(await _events(runtime, "s1")) == [("begin", None), ("end", None)]
        assert model.calls == 1, "never run twice"


async def _ended_run(handle: SessionHandle, run_id: str) -> list[dict[str, Any]]:
    """The events of the session's run `run_id`, once it ended (the runs before it end first)."""
    async with asyncio.timeout(10):
        while True:
            events = [e async for e in handle.listen(serialize=False, wait=10, timeout=10)]  # type: ignore[misc]
            if events and events[0]["body"]["run_id"] == run_id and events[-1]["type"] == "end":
                return events


async def test_enqueued_runs_wait_behind_the_sessions_run_and_start_one_by_one_in_order(
    redis: Redis, settings: Settings
) -> None:
    settings.max_queued_runs = 3
    async with Runtime(redis=redis, settings=settings) as runtime:
        model = GatedModel()
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1")
        second = await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2", if_busy="enqueue")
        assert (second.run_id, second.begin_event_id, second.waiting) == ("r2", "", True)
        retried = await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2", if_busy="enqueue")
        assert retried == second, "a retried enqueue waits once"
        await handle.submit(agent="gated", body={"user_prompt": "three"}, run_id="r3", if_busy="enqueue")
        assert await runtime.queue.depth(1) == 3, "waiting runs count as queued"
        with pytest.raises(QueueFullError):
            await handle.submit(agent="gated", body={"user_prompt": "four"}, if_busy="enqueue")
        async with Worker(runtime=runtime, agents={"gated": model.agent()}, concurrency=4):
            await model.wait_calls(1)
            assert await handle.cancel(), "the first run is cancelled: the second starts"
            await model.wait_calls(2)
            assert model.most == 1, "one run of the session at a time"
            model.gate.set()
            events = await _ended_run(handle, "r3")
        assert _outline(events) == [("begin", None), ("end", None)]
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        prompts = [p.content for m in session.msgs for p in m.parts if p.part_kind == "user-prompt"]
        assert prompts == ["one", "two", "three"], "each ran once, in order"
        assert await runtime.queue.depth(1) == 0
        assert not await redis.exists(handle.keys.waiting)


async def test_the_job_of_a_cancelled_queued_run_is_dropped_though_another_run_holds_its_session(
    redis: Redis, runtime: Runtime
) -> None:
    model = GatedModel()
    model.gate.set()
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1")
    assert await handle.cancel()
    await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2")
    async with Worker(runtime=runtime, agents={"gated": model.agent()}):
        events = await _ended_run(handle, "r2")
        deadline = time.monotonic() + 5
        while await redis.xlen(runtime.queue.key):  # r1's job is taken and dropped, not left to be taken again
            assert time.monotonic() < deadline, "a job is left in the queue"
            await asyncio.sleep(0.01)
    assert _outline(events) == [("begin", None), ("end", None)]
    assert model.calls == 1


async def test_a_run_whose_worker_died_after_saving_it_is_ended_not_run_again(redis: Redis, settings: Settings) -> None:
    """Its worker saved the conversation, then died before `end`: the next attempt writes `end` and
    neither calls the model again nor saves the run's messages twice."""
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id="r1")
        live = await LiveRun.adopt(dead, handle.keys, run_id="r1")
        assert live is not None
        conversation: list[ModelMessage] = [
            ModelRequest(parts=[UserPromptPart("hi")], run_id="r1"),
            ModelResponse(parts=[TextPart("hello world")], run_id="r1"),
        ]
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        session.add_msgs(conversation)
        await session.save()
        dead.leases.release(live.lease)  # the worker dies: its lease lapses, no `end` is written
        await redis.delete(handle.keys.live)
        model = GatedModel()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            events = await _ended_run(handle, "r1")
        assert _outline(events) == [("begin", None), ("end", None)]
        assert model.calls == 0
        stored = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await stored.load()
        assert [m.parts for m in stored.msgs] == [m.parts for m in conversation], "saved once"


async def test_a_lease_outliving_its_jobs_last_renewal_is_waited_out_once(redis: Redis, settings: Settings) -> None:
    """The dead worker's job goes silent a little before its lease lapses: the worker that takes the job
    waits the lease's remaining time and resumes the run, rather than letting the job go silent once more."""
    settings.lease_ttl, settings.lease_renew_interval = 0.5, 0.05
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id="r1")
        wake = queue_wake_key(settings.redis_prefix, "dead")
        await runtime.queue.create_group(wake=wake)
        [job] = await runtime.queue.claim(client=redis, consumer="dead", count=1, block_ms=1, wake=wake)
        live = await LiveRun.adopt(dead, handle.keys, run_id="r1")
        assert live is not None
        dead.leases.release(live.lease)  # the worker dies: neither its job nor its lease is renewed again,
        await redis.pexpire(handle.keys.live, 800)  # and its lease's last renewal came after the job's
        model = GatedModel()
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            await model.wait_calls(1)
            [pending] = await redis.xpending_range(runtime.queue.key, GROUP, min="-", max="+", count=10)
            assert pending["message_id"].decode() == job.id
            assert pending["times_delivered"] == 2, "taken over once: by the dead worker, then by this one"
            events = await _ended_run(handle, "r1")
        resumed = [e["body"] for e in events if e["type"] == "event" and e["body"].get("event") == "resumed"]
        assert resumed == [{"idx": 0, "event": "resumed", "attempt": 2}]
        assert _outline(events) == [("begin", None), ("end", None)]
        assert model.calls == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_lease_lapsing_as_its_job_is_taken_over_never_loses_the_run(
    redis: Redis, settings: Settings, seed: int
) -> None:
    """Seeded: a dead worker's leases lapse at random moments around the instant another worker takes its
    jobs over (some a few ms before, some during, some after). Every run is resumed once and ends; none is
    dropped for looking over while its lease lapsed between two looks (a job was acknowledged unrun)."""
    rng = random.Random(seed)
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # leases a loaded machine still renews
    sessions = [f"s{i}" for i in range(30)]
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handles = [SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=s) for s in sessions]
        for handle in handles:
            await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id=f"r-{handle.keys.session_id}")
        wake = queue_wake_key(settings.redis_prefix, "dead")
        await runtime.queue.create_group(wake=wake)
        jobs = await runtime.queue.claim(client=redis, consumer="dead", count=len(sessions), block_ms=1, wake=wake)
        assert len(jobs) == len(sessions)
        for handle in handles:
            live = await LiveRun.adopt(dead, handle.keys, run_id=f"r-{handle.keys.session_id}")
            assert live is not None
            dead.leases.release(live.lease)  # the worker dies: its jobs and leases are not renewed again
            await redis.pexpire(handle.keys.live, rng.randint(950, 1080))  # lapsing around the job's takeover
        model = GatedModel()
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}, concurrency=len(sessions)):
            ended = await asyncio.gather(*(_ended_run(h, f"r-{h.keys.session_id}") for h in handles))
    for events in ended:
        assert _outline(events) == [("begin", None), ("end", None)]
        resumed = [e["body"] for e in events if e["type"] == "event" and e["body"].get("event") == "resumed"]
        assert resumed == [{"idx": 0, "event": "resumed", "attempt": 2}]
    assert model.calls == len(sessions)


@pytest.mark.parametrize("outcome", ["error", "dropped"])
async def test_a_worker_stops_though_a_redis_call_turned_its_cancel_into_an_error(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    """A Redis client may turn a cancel into an error (Python 3.11's `asyncio.timeout` does when its deadline
    passes as the cancel arrives), or drop it as its call completes (Python 3.11's `asyncio.wait_for`, which
    redis-py sends each command through): the worker's job keeper still ends when the worker stops, rather
    than going on for ever (the stop then never returned)."""
    settings.lease_renew_interval = 0.02
    entered, converted = asyncio.Event(), asyncio.Event()

    async def heartbeat(queue: RunQueue, consumer: str, job_ids: list[str]) -> None:
        entered.set()
        if converted.is_set():
            return
        try:
            await asyncio.sleep(3600)  # a Redis call in flight
        except asyncio.CancelledError:
            converted.set()
            if outcome == "error":
                raise ConnectionError("the cancel, turned into an error") from None
            # "dropped": the call returns as if the cancel had come a moment later

    async with Runtime(redis=redis, settings=settings) as runtime:
        monkeypatch.setattr(RunQueue, "heartbeat", heartbeat)
        worker = Worker(runtime=runtime, agents={})
        await worker.start()
        async with asyncio.timeout(10):
            await entered.wait()
            await worker.drain(0)
    assert converted.is_set(), "the keeper was stopped mid-call"
