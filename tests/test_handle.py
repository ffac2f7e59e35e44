"""`SessionHandle`: a session seen read-only from anywhere: its events, its live run, its cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import TextPart, UserPromptPart
from redis.asyncio import Redis

from pydantic_ai_stream import (
    AgxCanceledError,
    InvalidIdError,
    RedisSession,
    RunExistsError,
    Runtime,
    SessionBusyError,
    SessionHandle,
    Settings,
    run,
)
from pydantic_ai_stream._core.submission import BusyPolicy
from pydantic_ai_stream._read.handle import live_sessions
from pydantic_ai_stream._runtime.worker import Worker
from support import GatedModel, MemorySession, ScopedDeps, scripted_model


@pytest.fixture
async def runtime(redis: Redis) -> AsyncIterator[Runtime]:
    async with Runtime(redis=redis, settings=Settings(redis_prefix=f"h{uuid.uuid4().hex[:10]}")) as runtime:
        yield runtime
    await redis.delete(*[k async for k in redis.scan_iter(f"{runtime.settings.redis_prefix}:*")] or ["-"])


async def test_a_handle_follows_cancels_and_lists_a_run_it_did_not_start(redis: Redis, runtime: Runtime) -> None:
    deps = ScopedDeps(redis=redis, user_id=7, session_id="s1", runtime=runtime)
    task = asyncio.create_task(
        run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=["a "], stall=True)), "hi", deps)
    )
    handle = SessionHandle.of(runtime, scope_id=1, user_id=7, session_id="s1")
    entries = handle.listen_entries(timeout=5)
    seen = []
    async for entry in entries:
        assert entry is not None
        seen.append(entry)
        if entry.body.get("content") == "a ":
            break
    assert seen[0].type == "begin"
    assert await handle.is_live()
    [active] = await live_sessions(runtime, scope_id=1, user_id=7)
    assert (active.session_id, active.run_id, active.queued) == ("s1", deps.run_id, False)
    assert not await handle.cancel(run_id="another-run"), "only the run named is cancelled"
    assert await handle.is_live()
    assert await handle.cancel(run_id=deps.run_id)
    assert not await handle.is_live(), "a run asked to stop is no longer live"
    assert not await handle.cancel(), "asked once"
    rest = [entry async for entry in entries]
    assert [(e.type, e.body.get("msg")) for e in rest if e is not None][-2:] == [("error", "canceled"), ("end", None)]
    with pytest.raises(AgxCanceledError):
        await asyncio.wait_for(task, 5)
    assert await live_sessions(runtime, scope_id=1, user_id=7) == []
    # Resumed after the last entry it saw, a handle of a later listener gets nothing more.
    last = rest[-1]
    assert last is not None
    assert [e async for e in handle.listen(after=last.id)] == []


async def test_a_handle_checks_ids_before_any_io(runtime: Runtime) -> None:
    with pytest.raises(InvalidIdError):
        SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="a:b")
    with pytest.raises(InvalidIdError):
        SessionHandle.of(runtime, scope_id=True, user_id=1, session_id="s")


async def test_handles_of_one_session_under_two_prefixes_see_different_streams(redis: Redis, runtime: Runtime) -> None:
    deps = ScopedDeps(redis=redis, user_id=1, session_id="s1", runtime=runtime)
    await run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=["x "])), "hi", deps)
    async with Runtime(redis=redis, settings=Settings(redis_prefix=f"o{uuid.uuid4().hex[:10]}")) as other:
        events = [e async for e in SessionHandle.of(other, scope_id=1, user_id=1, session_id="s1").listen(wait=0)]
    assert events == []
    mine = [e async for e in SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1").listen(wait=0)]
    types = [json.loads(e)["type"] for e in mine if isinstance(e, str)]  # serialized, as the published API
    assert len(types) == len(mine)
    assert (types[0], types[-1]) == ("begin", "end")


async def _texts_of_conversation(runtime: Runtime, session_id: str) -> list[str]:
    session = RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=1, session_id=session_id)
    await session.load()
    return [
        str(part.content)
        for message in session.msgs
        for part in message.parts
        if isinstance(part, UserPromptPart | TextPart)
    ]


@pytest.mark.parametrize("policy", ["interrupt", "rollback"])
async def test_a_run_that_interrupts_the_sessions_run_starts_once_it_has_ended(
    runtime: Runtime, policy: BusyPolicy
) -> None:
    first, second = GatedModel(), GatedModel()
    second.gate.set()
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    async with Worker(runtime=runtime, agents={"first": first.agent(), "second": second.agent()}):
        await handle.submit(agent="first", body={"user_prompt": "one"})
        listening = handle.listen_entries(timeout=10)
        async for entry in listening:
            if entry is not None and entry.body.get("content") == "hello ":
                break  # the first run is streaming
        submitted = await handle.submit(agent="second", body={"user_prompt": "two"}, if_busy=policy)
        ended = [entry async for entry in listening if entry is not None]
        assert [(e.type, e.body.get("msg"), e.body.get("rollback")) for e in ended[-2:]] == [
            ("error", "canceled", True if policy == "rollback" else None),
            ("end", None, None),
        ]
        events = [e async for e in handle.listen_entries(timeout=10) if e is not None]
        assert events[0].id == submitted.begin_event_id
        assert [e.type for e in events if e.type != "event"] == ["begin", "end"]
    assert (first.calls, second.calls) == (1, 1)
    conversation = await _texts_of_conversation(runtime, "s1")
    kept = ["one", "hello "] if policy == "interrupt" else []
    assert conversation == [*kept, "two", "hello world"]


async def test_a_run_refused_on_a_busy_session_leaves_its_run_alone(runtime: Runtime) -> None:
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    queued = await handle.submit(agent="first", body={"user_prompt": "one"})
    with pytest.raises(SessionBusyError):
        await handle.submit(agent="second", body={"user_prompt": "two"})
    [active] = await live_sessions(runtime, scope_id=1, user_id=1)
    assert (active.run_id, active.queued) == (queued.run_id, True)
    # A queued run is interrupted at once: it never ran, and the new one takes its place in the queue.
    replaced = await handle.submit(agent="second", body={"user_prompt": "two"}, if_busy="interrupt")
    [active] = await live_sessions(runtime, scope_id=1, user_id=1)
    assert (active.run_id, active.queued) == (replaced.run_id, True)
    assert await runtime.queue.depth(1) == 1


@pytest.mark.parametrize(("policy", "running"), [("interrupt", True), ("rollback", True), ("interrupt", False)])
async def test_an_interrupting_run_goes_first_and_the_waiting_runs_wait_on_behind_it(
    runtime: Runtime, policy: BusyPolicy, running: bool
) -> None:
    """The session's run (running, or queued: ended at once) is cancelled; the interrupting run takes the
    session next, not the run that waited behind it, which starts after it."""
    first, second = GatedModel(), GatedModel()
    second.gate.set()
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    worker = Worker(runtime=runtime, agents={"first": first.agent(), "second": second.agent()})
    async with contextlib.AsyncExitStack() as stack:
        await handle.submit(agent="first", body={"user_prompt": "one"}, run_id="r1")
        if running:
            await stack.enter_async_context(worker)
            await first.wait_calls(1)
        waiting = await handle.submit(agent="second", body={"user_prompt": "two"}, run_id="r2", if_busy="enqueue")
        assert waiting.waiting
        submitted = await handle.submit(agent="second", body={"user_prompt": "three"}, run_id="r3", if_busy=policy)
        assert (submitted.run_id, submitted.waiting) == ("r3", False), "not refused: it took the session next"
        [begin] = await handle.stream.read_range(after="0-0", count=1)
        assert (begin.id, begin.body["run_id"]) == (submitted.begin_event_id, "r3")
        if not running:
            [active] = await live_sessions(runtime, scope_id=1, user_id=1)
            assert (active.run_id, active.queued) == ("r3", True)
            await stack.enter_async_context(worker)
        async with asyncio.timeout(10):
            while True:  # r3 runs; r2, still waiting, starts after it
                events = [e async for e in handle.listen_entries(timeout=10) if e is not None]
                if events[0].body["run_id"] == "r2" and events[-1].type == "end":
                    break
        assert [e.type for e in events if e.type != "event"] == ["begin", "end"]
    assert (first.calls, second.calls) == (1 if running else 0, 2)
    kept = ["one", "hello "] if policy == "interrupt" and running else []
    assert await _texts_of_conversation(runtime, "s1") == [*kept, "three", "hello world", "two", "hello world"]
    assert await runtime.queue.depth(1) == 0


async def test_a_retried_cancel_naming_the_run_answers_as_the_first_did(runtime: Runtime) -> None:
    """A cancel whose reply was lost is sent again: naming the run, it answers `True` again (the run was
    cancelled), queued (ended at once) or running; a cancel naming no run cannot tell a retry from a second
    cancel and answers `False`; one naming another run too."""
    model = GatedModel()
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1")
    assert await handle.cancel(run_id="r1")
    assert await handle.cancel(run_id="r1"), "the queued run it ended"
    assert not await handle.cancel()
    assert not await handle.cancel(run_id="other")
    async with Worker(runtime=runtime, agents={"gated": model.agent()}):
        await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2")
        await model.wait_calls(1)
        assert await handle.cancel(run_id="r2")
        assert await handle.cancel(run_id="r2"), "the running run it asked to stop"
        assert not await handle.cancel()
        events = [e async for e in handle.listen_entries(timeout=10) if e is not None]
        assert [(e.type, e.body.get("msg")) for e in events if e.type != "event"] == [
            ("begin", None),
            ("error", "canceled"),
            ("end", None),
        ]
        assert await handle.cancel(run_id="r2"), "and once it ended"


async def test_a_retried_run_never_runs_again_after_another_run_replaced_its_stream(
    redis: Redis, runtime: Runtime
) -> None:
    """A Run whose reply was lost is retried (same run id) after the session ran another run: it answers that
    the run exists (its `begin` id), rejected or enqueued, and starts nothing, on a free or a busy session."""
    handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
    first = await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1")
    assert await handle.cancel()
    await handle.submit(agent="gated", body={"user_prompt": "two"}, run_id="r2")
    assert await handle.cancel()
    for policy in ("reject", "enqueue", "interrupt"):
        with pytest.raises(RunExistsError) as exists:
            await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1", if_busy=policy)
        assert exists.value.begin_event_id == first.begin_event_id
        assert not await live_sessions(runtime, scope_id=1, user_id=1), "nothing started"
    await handle.submit(agent="gated", body={"user_prompt": "three"}, run_id="r3")
    with pytest.raises(RunExistsError):
        await handle.submit(agent="gated", body={"user_prompt": "one"}, run_id="r1", if_busy="enqueue")
    assert not await redis.exists(handle.keys.waiting), "it does not wait behind r3 to run again"
    assert [a.run_id for a in await live_sessions(runtime, scope_id=1, user_id=1)] == ["r3"]
