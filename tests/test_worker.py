"""`Worker`: executes queued runs, a bounded number at once, each once; stops claiming when told."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from pydantic_ai_stream import (
    Attachment,
    Entry,
    QueueFullError,
    RedisSession,
    Runtime,
    SessionBusyError,
    SessionHandle,
    Settings,
    Submitted,
    live_sessions,
)
from pydantic_ai_stream._core.keys import queue_wake_key
from pydantic_ai_stream._core.submission import Submission
from pydantic_ai_stream._durable.queue import GROUP, RunQueue
from pydantic_ai_stream._store.stream import SessionStream
from pydantic_ai_stream._write.live import LiveRun
from pydantic_ai_stream.server import Worker
from support import GatedModel


async def _submit(runtime: Runtime, session_id: str, agent: str = "gated") -> Submitted:
    stream = runtime.stream(runtime.keys(scope_id=1, user_id=1, session_id=session_id))
    return await runtime.queue.submit(stream, Submission(agent=agent, body={"user_prompt": "hi"}))


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


async def test_a_run_whose_attachments_expired_before_it_started_ends_with_an_error(
    redis: Redis, runtime: Runtime
) -> None:
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    image = Attachment(data=b"\x89PNG", media_type="image/png")
    await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id="r1", attachments=[image])
    assert 0 < await redis.pttl(handle.keys.attachments("r1")) <= runtime.queue.wait_ms, "they live as it may wait"
    await redis.delete(handle.keys.attachments("r1"))  # as if expired
    model = GatedModel()
    model.gate.set()
    async with Worker(runtime=runtime, agents={"gated": model.agent()}):
        events = await _events(runtime, "s1")
    assert _outline(events) == [
        ("begin", None),
        ("error", "the run's attachments expired before a worker could start it"),
        ("end", None),
    ]
    assert model.calls == 0, "the model never saw the run without its attachments"


async def test_a_cancelled_queued_runs_attachments_go_with_its_job(redis: Redis, runtime: Runtime) -> None:
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    image = Attachment(data=b"\x89PNG", media_type="image/png")
    await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id="r1", attachments=[image])
    assert await handle.cancel()
    async with Worker(runtime=runtime, agents={"gated": GatedModel().agent()}) as worker:
        deadline = time.monotonic() + 10
        while await redis.exists(handle.keys.attachments("r1")):  # the worker claims the job, finds it ended
            assert time.monotonic() < deadline, "the cancelled run's attachments were never dropped"
            await asyncio.sleep(0.02)
        await worker.join()


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
    # Leases a loaded machine still renews: until every run was taken over, a loop stalled for a lease TTL makes
    # a second takeover (3 s: the takeover of 30 runs on 2 busy cores took over 1 s).
    settings.lease_ttl, settings.lease_renew_interval = 3.0, 0.05
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
    # Leases a loaded machine still renews: until every run was taken over, a loop stalled for a lease TTL makes
    # a second takeover (3 s: the takeover of 30 runs on 2 busy cores took over 1 s).
    settings.lease_ttl, settings.lease_renew_interval = 3.0, 0.05
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
    # Leases a loaded machine still renews: until every run was taken over, a loop stalled for a lease TTL makes
    # a second takeover (3 s: the takeover of 30 runs on 2 busy cores took over 1 s).
    settings.lease_ttl, settings.lease_renew_interval = 3.0, 0.05
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
    """Its worker saved the conversation, then died before `end`: the next attempt streams the saved answer
    again after its `resumed` marker (which tells listeners to drop it) and writes `end`, and neither calls the
    model again nor saves the run's messages twice."""
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
        marker = next(i for i, e in enumerate(events) if e["body"].get("event") == "resumed")
        assert [(e["body"].get("event"), e["body"].get("content")) for e in events[marker + 1 : -1]] == [
            ("llm-begin", None),
            ("part_start", "hello world"),
            ("llm-end", None),
        ], "the answer the resumed marker replaced is streamed again, from the saved conversation"
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
    # Leases a loaded machine still renews: until every run was taken over, a loop stalled for a lease TTL makes
    # a second takeover (3 s: the takeover of 30 runs on 2 busy cores took over 1 s).
    settings.lease_ttl, settings.lease_renew_interval = 3.0, 0.05
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
            await redis.pexpire(handle.keys.live, rng.randint(2950, 3080))  # lapsing around the job's takeover
        model = GatedModel()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}, concurrency=len(sessions)):
            async with asyncio.timeout(30), model.started:
                await model.started.wait_for(lambda: model.calls == len(sessions))  # every run taken over
            # From here a loop stalled for a lease TTL (a loaded machine) must not make a second takeover.
            settings.lease_ttl = 30.0
            model.gate.set()
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


async def test_a_run_enqueued_behind_a_run_longer_than_the_queue_wait_runs_after_it(
    redis: Redis, settings: Settings
) -> None:
    """The session's run lasts longer than `queue_wait` (1 s): the run waiting behind it waits on, counted in
    its scope the while, and runs once the first ended; then nothing of either stays counted."""
    settings.queue_wait, settings.max_queued_runs = 1, 1
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.1
    async with Runtime(redis=redis, settings=settings) as runtime:
        model = GatedModel()
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        other = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s2")
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1")
            await model.wait_calls(1)
            await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2", if_busy="enqueue")
            await asyncio.sleep(2.5)  # the time being tested: the first run goes on past twice the queue wait
            assert await runtime.queue.depth(1) == 1, "the second still waits, and counts"
            with pytest.raises(QueueFullError):
                await other.submit(agent="gated", body={"user_prompt": "elsewhere"})
            model.gate.set()
            events = await _ended_run(handle, "r2")
            assert _outline(events) == [("begin", None), ("end", None)]
            assert await runtime.queue.depth(1) == 0
            await other.submit(agent="gated", body={"user_prompt": "elsewhere"}, run_id="r3")
            assert _outline(await _ended_run(other, "r3")) == [("begin", None), ("end", None)]
        assert model.calls == 3


async def test_a_run_waiting_behind_a_run_that_died_stops_counting_in_its_scope(
    redis: Redis, settings: Settings
) -> None:
    """The session's run (started in a process, not queued) dies: nobody starts the run waiting behind it.
    Once its wait is over (`queue_wait` after the dead run's last renewal) it counts no more: the scope, whose
    bound it filled, takes runs again."""
    settings.queue_wait, settings.max_queued_runs = 1, 1
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.1
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        live = await LiveRun.open(dead, handle.keys, run_id="r1")
        await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2", if_busy="enqueue")
        assert await runtime.queue.depth(1) == 1
        dead.leases.release(live.lease)  # its process dies: the lease is renewed no more
        deadline = time.monotonic() + 10
        while await runtime.queue.depth(1):
            assert time.monotonic() < deadline, "the run that nobody starts still counts"
            await asyncio.sleep(0.05)
        other = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s2")
        await other.submit(agent="gated", body={"user_prompt": "elsewhere"}, run_id="r3")
        assert [run.session_id for run in await live_sessions(runtime, scope_id=1, user_id=1)] == ["s2"]


async def test_a_run_waiting_behind_a_run_that_died_starts_once_a_listener_ends_that_run(
    redis: Redis, settings: Settings
) -> None:
    """The session's run (started in a process, not queued) dies; a listener finds it dead and ends it (`run
    lost`): the run waiting behind it starts then, runs and ends, rather than waiting for nobody."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.1
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        live = await LiveRun.open(dead, handle.keys, run_id="r1")
        await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2", if_busy="enqueue")
        dead.leases.release(live.lease)  # its process dies: the lease is renewed no more
        model = GatedModel()
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            lost = await _events(runtime, "s1")
            assert _outline(lost) == [("begin", None), ("error", "run lost"), ("end", None)]
            assert lost[0]["body"]["run_id"] == "r1"
            events = await _ended_run(handle, "r2")
        assert _outline(events) == [("begin", None), ("end", None)]
        assert model.calls == 1
        assert await runtime.queue.depth(1) == 0
        assert not await redis.exists(handle.keys.waiting)


async def test_a_run_between_two_workers_keeps_its_session(redis: Redis, settings: Settings) -> None:
    """Its worker died and no other has taken it over yet: a new run of the session is refused, or enqueued
    behind it, rather than taking the session (the run was then never resumed nor ended)."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.1
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1")
        live = await LiveRun.adopt(dead, handle.keys, run_id="r1")
        assert live is not None
        dead.leases.release(live.lease)  # its worker dies
        await redis.delete(handle.keys.live)  # and its lease lapses
        with pytest.raises(SessionBusyError):
            await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2")
        enqueued = await handle.submit(agent="gated", body={"user_prompt": "three"}, run_id="r3", if_busy="enqueue")
        assert enqueued.waiting
        model = GatedModel()
        model.gate.set()
        listening = handle.listen_entries(timeout=10)
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            first = [entry async for entry in listening if entry is not None]
            assert (first[0].body["run_id"], [e.type for e in first if e.type != "event"]) == ("r1", ["begin", "end"])
            assert _outline(await _ended_run(handle, "r3")) == [("begin", None), ("end", None)]
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        prompts = [p.content for m in session.msgs for p in m.parts if p.part_kind == "user-prompt"]
        assert prompts == ["one", "three"]


class OneByOne:
    """A model whose calls each wait for their own prompt's gate: the test ends runs one at a time and sees
    in which order they started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Condition()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        [prompt] = [
            p.content for m in messages if isinstance(m, ModelRequest) for p in m.parts if p.part_kind == "user-prompt"
        ]
        assert isinstance(prompt, str)
        async with self.changed:
            self.started.append(prompt)
            self.changed.notify_all()
        yield "hello "
        await self.gates.setdefault(prompt, asyncio.Event()).wait()
        yield "world"

    async def wait_started(self, n: int) -> list[str]:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(lambda: len(self.started) >= n)
        return self.started[:n]

    def end(self, prompt: str) -> None:
        self.gates.setdefault(prompt, asyncio.Event()).set()

    def agent(self) -> Agent[Any, str]:
        return Agent(FunctionModel(stream_function=self.stream))


async def _submit_in(runtime: Runtime, scope_id: int, session_id: str) -> None:
    stream = runtime.stream(runtime.keys(scope_id=scope_id, user_id=1, session_id=session_id))
    await runtime.queue.submit(stream, Submission(agent="one", body={"user_prompt": session_id}))


async def test_a_scope_with_nothing_running_starts_next_whatever_another_scope_queued(runtime: Runtime) -> None:
    """Scope 1 has 20 runs queued; scope 2's run, submitted while one of them runs, waits for one turn of
    each scope with runs queued (one run of scope 1), not for the 19 runs queued before it."""
    model = OneByOne()
    for i in range(20):
        await _submit_in(runtime, 1, f"a{i}")
    async with Worker(runtime=runtime, agents={"one": model.agent()}, concurrency=1) as worker:
        assert await model.wait_started(1) == ["a0"]
        await _submit_in(runtime, 2, "b0")
        model.end("a0")
        model.end("a1")
        assert await model.wait_started(3) == ["a0", "a1", "b0"]
        handle = SessionHandle.of(runtime, scope_id=2, user_id=1, session_id="b0")
        model.end("b0")
        assert _outline([e async for e in handle.listen(serialize=False, timeout=10)]) == [
            ("begin", None),
            ("end", None),
        ]  # type: ignore[misc]
        for i in range(1, 20):
            model.end(f"a{i}")
        await model.wait_started(21)
        await worker.join()
    assert model.started == ["a0", "a1", "b0", *(f"a{i}" for i in range(2, 20))]
    assert await runtime.queue.waiting() == 0


async def test_a_run_cut_short_is_resumed_at_the_next_free_slot_before_new_runs(
    redis: Redis, settings: Settings
) -> None:
    """A worker always full of new runs still takes a dead worker's job over first when a slot frees, rather
    than after the backlog (a run cut by a kill -9 waited for every run queued)."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        model = OneByOne()
        await _submit_in(runtime, 1, "cut")
        wake = queue_wake_key(settings.redis_prefix, "dead")
        await runtime.queue.create_group(wake=wake)
        [job] = await runtime.queue.claim(client=redis, consumer="dead", count=1, block_ms=1, wake=wake)
        for i in range(10):
            await _submit_in(runtime, 1, f"new{i}")
        cut = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="cut")
        async with Worker(runtime=runtime, agents={"one": model.agent()}, concurrency=1) as worker:
            assert await model.wait_started(1) == ["new0"], "the dead worker's job is not silent yet"
            live = await LiveRun.adopt(dead, cut.keys, run_id=job.run_id)
            assert live is not None
            dead.leases.release(live.lease)  # the worker is killed: its job and lease go silent
            await redis.delete(cut.keys.live)
            await runtime.queue.hand_back("dead", job.id)  # silent for long already
            deadline = time.monotonic() + 10
            while not worker._takeover:  # the worker saw it (its renewal timer)
                assert time.monotonic() < deadline, "the worker did not see the dead worker's job"
                await asyncio.sleep(0.01)
            model.end("new0")
            assert await model.wait_started(2) == ["new0", "cut"]
            model.end("cut")
            events = await _ended_run(cut, job.run_id)
            for i in range(1, 10):
                model.end(f"new{i}")
            await model.wait_started(11)
            await worker.join()
    resumed = [e["body"] for e in events if e["type"] == "event" and e["body"].get("event") == "resumed"]
    assert resumed == [{"idx": 0, "event": "resumed", "attempt": 2}]
    assert _outline(events) == [("begin", None), ("end", None)]


async def _killed_mid_tool_call(dead: Runtime, handle: SessionHandle, run_id: str) -> None:
    """Submit the run `run_id`; a worker of `dead` claims it, streams, checkpoints its tool call and dies."""
    runtime = handle.runtime
    await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id=run_id)
    wake = queue_wake_key(runtime.settings.redis_prefix, "dead")
    await runtime.queue.create_group(wake=wake)
    await runtime.queue.claim(client=runtime.redis, consumer="dead", count=1, block_ms=1, wake=wake)
    live = await LiveRun.adopt(dead, handle.keys, run_id=run_id)
    assert live is not None
    progress: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("hi")], run_id=run_id),
        ModelResponse(parts=[TextPart("looking"), ToolCallPart("lookup", {}, tool_call_id="c1")], run_id=run_id),
    ]
    await live.add("event", "pydantic-ai", {"idx": 1, "event": "part_start", "content": "looking"})
    await live.checkpoint(1, progress)
    dead.leases.release(live.lease)  # the worker is killed mid-tool-call: nothing of it runs again


@pytest.mark.parametrize(("lease", "rollback"), [("held", False), ("lapsed", False), ("held", True)])
async def test_a_run_cancelled_while_its_worker_is_dead_is_ended_by_the_next_not_resumed(
    redis: Redis, settings: Settings, lease: str, rollback: bool
) -> None:
    """The cancel reaches no process (its worker was killed), whether the dead worker's lease still holds
    the flag or has lapsed: the worker that takes the job over ends the run (`error` canceled + `end`),
    runs nothing, and keeps the run's last checkpoint in the conversation (not when rolled back)."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await _killed_mid_tool_call(dead, handle, "r1")
        if lease == "lapsed":
            await redis.delete(handle.keys.live)
        assert await handle.cancel(rollback=rollback)
        assert not await live_sessions(runtime, scope_id=1, user_id=1), "a cancelled run is not listed"
        model = GatedModel()
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            events = await _ended_run(handle, "r1")
            deadline = time.monotonic() + 5
            while await redis.xlen(runtime.queue.key) or await runtime.queue.waiting():
                assert time.monotonic() < deadline, "its job is left in the queue"
                await asyncio.sleep(0.01)
        assert _outline(events) == [("begin", None), ("error", "canceled"), ("end", None)]
        assert not [e for e in events if e["body"].get("event") == "resumed"], "never resumed"
        assert events[-2]["body"] == ({"msg": "canceled", "rollback": True} if rollback else {"msg": "canceled"})
        assert model.calls == 0
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        if rollback:
            assert session.msgs == []
        else:
            assert [type(m) for m in session.msgs] == [ModelRequest, ModelResponse, ModelRequest]
            [answered] = session.msgs[2].parts
            assert isinstance(answered, ToolReturnPart)
            assert answered.tool_call_id == "c1"
        assert not await handle.is_live()


async def test_a_run_interrupting_one_whose_worker_is_dead_starts_within_a_lease_ttl_or_so(
    redis: Redis, settings: Settings
) -> None:
    """`if_busy="interrupt"` on a session whose run's worker was killed: that run is ended as cancelled (by
    the worker that takes it over) and the new run starts, in about a lease TTL, not at the end of `wait`."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05
    async with Runtime(redis=redis, settings=settings) as dead, Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await _killed_mid_tool_call(dead, handle, "r1")
        model = GatedModel()  # a resumed r1 would block on its gate
        async with Worker(runtime=runtime, agents={"gated": model.agent()}):
            started = time.monotonic()
            submitted = await handle.submit(
                agent="gated", body={"user_prompt": "two"}, run_id="r2", if_busy="interrupt"
            )
            took = time.monotonic() - started
            assert (submitted.run_id, submitted.waiting) == ("r2", False)
            [active] = await live_sessions(runtime, scope_id=1, user_id=1)
            assert active.run_id == "r2"
            model.gate.set()
            events = await _ended_run(handle, "r2")
        assert events[0]["id"] == submitted.begin_event_id
        assert _outline(events) == [("begin", None), ("end", None)]
        assert model.calls == 1, "r1 never ran again"
        assert took < 3 * settings.lease_ttl, took  # the dead job's idle limit, then the takeover; `wait` is 30 s
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        prompts = [p.content for m in session.msgs for p in m.parts if p.part_kind == "user-prompt"]
        assert prompts == ["hi", "two"], "r1's progress kept, then r2"


async def test_an_adoption_whose_reply_was_lost_is_the_workers_own_when_it_retries(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's adoption reached Redis but its reply was lost: its retry (same worker, same job) finds
    the run its own and runs it as attempt 1 at once, not as attempt 2 a lease TTL later."""
    settings.lease_ttl, settings.lease_renew_interval = 3.0, 0.05
    adopt = SessionStream.adopt
    others: list[Entry | None] = []

    async def reply_lost_once(stream: SessionStream, **kwargs: Any) -> Entry | None:
        taken = await adopt(stream, **kwargs)
        if others:
            return taken
        others.append(await adopt(stream, **{**kwargs, "adopter": "w2/other"}))
        raise RedisConnectionError("the reply was lost")  # the script ran: the run is taken

    monkeypatch.setattr(SessionStream, "adopt", reply_lost_once)
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await handle.submit(agent="gated", body={"user_prompt": "hi"}, run_id="r1")
        model = GatedModel()
        model.gate.set()
        started = time.monotonic()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}, name="w1"):
            events = await _ended_run(handle, "r1")
        took = time.monotonic() - started
        assert others == [None], "another worker's adoption is refused"
        assert _outline(events) == [("begin", None), ("end", None)]
        assert not [e for e in events if e["body"].get("event") == "resumed"], "attempt 1 goes on"
        assert model.calls == 1
        assert took < settings.lease_ttl, took
