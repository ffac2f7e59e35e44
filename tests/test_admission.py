"""Admission: the checks a caller's run passes, each `if_busy` policy, and the hook that starts a waiting run,
against the real Redis and without a worker (the flows through gRPC and workers are in e2e/test_grpc.py and
test_worker.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import (
    AgentNotAllowedError,
    InvalidIdError,
    InvalidRequestError,
    QueueFullError,
    RunExistsError,
    Runtime,
    SessionBusyError,
    SessionHandle,
    Settings,
    ShuttingDownError,
    UnknownAgentError,
)
from pydantic_ai_stream._core.entry import Entry
from pydantic_ai_stream._core.keys import run_id_or_new
from pydantic_ai_stream._core.submission import BusyPolicy
from pydantic_ai_stream._read.handle import live_sessions
from pydantic_ai_stream._runtime.admission import Admission, accept, run_ended
from pydantic_ai_stream._runtime.auth import AuthError, Caller, StaticTokens
from support import ScopedDeps

ANYONE = Caller(scope_id=1, user_id=1)
LIMITED = Caller(scope_id=1, user_id=1, agents=frozenset({"a"}))


def _handle(runtime: Runtime, session_id: str = "s1") -> SessionHandle:
    return SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=session_id)


async def _waiting(redis: Redis, handle: SessionHandle) -> list[str]:
    """The ids of the runs waiting behind the session's run, first first."""
    return [json.loads(item)["run_id"] for item in await redis.lrange(handle.keys.waiting, 0, -1)]


async def _first_run(handle: SessionHandle) -> str:
    [begin] = await handle.stream.read_range(after="0-0", count=1)
    assert begin.type == "begin"
    return str(begin.body["run_id"])


def _admission(runtime: Runtime, fleet: Callable[[], Awaitable[frozenset[str]]] | None = None) -> Admission:
    tokens = StaticTokens(tokens={"any": ANYONE, "limited": LIMITED})
    return Admission(runtime=runtime, agents={"a", "b"}, authenticator=tokens, max_prompt_bytes=20, fleet=fleet)


@pytest.mark.parametrize("policy", ["reject", "enqueue", "interrupt", "rollback"])
async def test_every_policy_starts_a_run_on_a_free_session_at_once(runtime: Runtime, policy: BusyPolicy) -> None:
    handle = _handle(runtime)
    submitted = await accept(handle, runtime.queue, agent="a", body={"user_prompt": "hi"}, if_busy=policy)
    assert not submitted.waiting
    [begin] = await handle.stream.read_range(after="0-0", count=1)
    assert (begin.id, begin.body) == (
        submitted.begin_event_id,
        {"session_id": "s1", "run_id": submitted.run_id, "agent": "a", "user_prompt": "hi"},
    )
    assert await runtime.queue.depth(1) == 1


async def test_reject_refuses_a_busy_session_writing_nothing(redis: Redis, runtime: Runtime) -> None:
    handle = _handle(runtime)
    first = await accept(handle, runtime.queue, agent="a", run_id="r1")
    with pytest.raises(SessionBusyError):
        await accept(handle, runtime.queue, agent="a", run_id="r2")
    assert await _first_run(handle) == first.run_id
    assert await _waiting(redis, handle) == []
    assert await runtime.queue.depth(1) == 1


async def test_enqueue_waits_behind_the_sessions_run_counted_and_starts_when_it_ended(
    redis: Redis, runtime: Runtime
) -> None:
    handle = _handle(runtime)
    await accept(handle, runtime.queue, agent="a", run_id="r1")
    second = await accept(handle, runtime.queue, agent="b", run_id="r2", if_busy="enqueue")
    third = await accept(handle, runtime.queue, agent="b", run_id="r3", if_busy="enqueue")
    assert [(s.run_id, s.begin_event_id, s.waiting) for s in (second, third)] == [("r2", "", True), ("r3", "", True)]
    assert await _waiting(redis, handle) == ["r2", "r3"], "in the order they came"
    assert await runtime.queue.depth(1) == 3, "a waiting run counts as queued in its scope"
    assert await handle.cancel(run_id="r1")  # ended at once (queued): the cancel calls the hook
    assert await _first_run(handle) == "r2"
    assert await _waiting(redis, handle) == ["r3"]
    assert await runtime.queue.depth(1) == 2, "r1 no longer counts; r2 is queued, r3 waits"


async def test_enqueue_is_bounded_by_the_scopes_queue(redis: Redis, settings: Settings) -> None:
    async with Runtime(redis=redis, settings=settings.model_copy(update={"max_queued_runs": 1})) as runtime:
        handle = _handle(runtime)
        await accept(handle, runtime.queue, agent="a", run_id="r1")
        with pytest.raises(QueueFullError):
            await accept(handle, runtime.queue, agent="a", run_id="r2", if_busy="enqueue")
        assert await _waiting(redis, handle) == []


@pytest.mark.parametrize("policy", ["interrupt", "rollback"])
async def test_interrupt_ends_a_queued_run_at_once_and_takes_its_place_first(
    redis: Redis, runtime: Runtime, policy: BusyPolicy
) -> None:
    handle = _handle(runtime)
    await accept(handle, runtime.queue, agent="a", run_id="r1")
    await accept(handle, runtime.queue, agent="a", run_id="r2", if_busy="enqueue")
    submitted = await accept(handle, runtime.queue, agent="b", run_id="r3", if_busy=policy)
    assert (submitted.run_id, submitted.waiting) == ("r3", False)
    [begin] = await handle.stream.read_range(after="0-0", count=1)
    assert (begin.id, begin.body["run_id"]) == (submitted.begin_event_id, "r3")
    assert await _waiting(redis, handle) == ["r2"], "the run that waited waits on, behind it"
    [active] = await live_sessions(runtime, scope_id=1, user_id=1)
    assert (active.run_id, active.queued) == ("r3", True)
    assert await runtime.queue.depth(1) == 2


@pytest.mark.parametrize("policy", ["interrupt", "rollback"])
async def test_interrupt_cancels_a_live_run_and_starts_when_it_ended(
    redis: Redis, runtime: Runtime, policy: BusyPolicy
) -> None:
    """The session's run is cancelled (rolled back with `rollback`); the interrupting run waits first in the
    session's line and starts once the run's owner ended it (its `stop()` calls the hook)."""
    handle = _handle(runtime)
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1", run_id="live")
    await deps.start()
    await accept(handle, runtime.queue, agent="a", run_id="r1", if_busy="enqueue")
    interrupting = asyncio.create_task(accept(handle, runtime.queue, agent="b", run_id="r2", if_busy=policy, wait=10))
    async with asyncio.timeout(10):
        while await _waiting(redis, handle) != ["r2", "r1"]:  # noqa: ASYNC110 (state in Redis: polled)
            await asyncio.sleep(0.01)
    assert not await handle.is_live(), "asked to stop"
    assert await handle.stream.rolled_back("live") == (policy == "rollback")
    await deps.stop()
    submitted = await interrupting
    assert (submitted.run_id, submitted.waiting) == ("r2", False)
    [begin] = await handle.stream.read_range(after="0-0", count=1)
    assert (begin.id, begin.body["run_id"]) == (submitted.begin_event_id, "r2")
    assert await _waiting(redis, handle) == ["r1"]


async def test_interrupt_answers_waiting_when_the_run_does_not_end_within_wait(redis: Redis, runtime: Runtime) -> None:
    handle = _handle(runtime)
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    await deps.start()
    submitted = await accept(handle, runtime.queue, agent="a", run_id="r1", if_busy="interrupt", wait=0.2)
    assert (submitted.run_id, submitted.begin_event_id, submitted.waiting) == ("r1", "", True)
    assert await _waiting(redis, handle) == ["r1"]
    await deps.stop()
    assert await _first_run(handle) == "r1", "it starts first when the run ended"


@pytest.mark.parametrize("policy", ["reject", "enqueue", "interrupt", "rollback"])
async def test_a_retried_run_is_the_run_it_started_whatever_its_policy(
    redis: Redis, runtime: Runtime, policy: BusyPolicy
) -> None:
    handle = _handle(runtime)
    first = await accept(handle, runtime.queue, agent="a", run_id="r1")
    with pytest.raises(RunExistsError) as exists:
        await accept(handle, runtime.queue, agent="a", run_id="r1", if_busy=policy)
    assert exists.value.begin_event_id == first.begin_event_id
    assert await _waiting(redis, handle) == []
    assert await _first_run(handle) == "r1"


async def test_a_run_id_is_made_once_and_checked(redis: Redis, runtime: Runtime) -> None:
    handle = _handle(runtime)
    await accept(handle, runtime.queue, agent="a")
    waiting = await accept(handle, runtime.queue, agent="a", if_busy="enqueue")
    assert len(waiting.run_id) == 32
    assert await _waiting(redis, handle) == [waiting.run_id], "the id it waits under is the one returned"
    assert run_id_or_new("r1") == "r1"
    with pytest.raises(InvalidIdError):
        await accept(handle, runtime.queue, agent="a", run_id="r:1", if_busy="enqueue")


async def test_the_hook_releases_a_queued_run_and_starts_the_first_waiting_run(redis: Redis, runtime: Runtime) -> None:
    handle = _handle(runtime)
    await accept(handle, runtime.queue, agent="a", run_id="r1")
    await accept(handle, runtime.queue, agent="a", run_id="r2", if_busy="enqueue")
    await run_ended(runtime.queue, handle.stream)
    assert await _first_run(handle) == "r1", "the session's run holds it: nothing starts"
    await handle.stream.cancel("nobody", run_id="r1")  # ended, as a process that does not call the hook would
    assert await runtime.queue.depth(1) == 2
    await run_ended(runtime.queue, handle.stream, queued="r1")
    assert await runtime.queue.depth(1) == 1, "r1 no longer counts; r2 does"
    assert await _first_run(handle) == "r2"
    await run_ended(runtime.queue, handle.stream)  # again, as each process that saw the end does
    assert await _first_run(handle) == "r2"


async def test_admission_authenticates_one_authorization_value(runtime: Runtime) -> None:
    admission = _admission(runtime)
    assert await admission.authenticate(["Bearer any"]) == ANYONE
    for values in ([], ["Bearer nobody"], ["Bearer any", "Bearer any"]):
        with pytest.raises(AuthError):
            await admission.authenticate(values)


async def test_admission_checks_agent_prompt_and_shutdown_in_order(runtime: Runtime) -> None:
    asked: list[str] = []

    async def fleet() -> frozenset[str]:
        asked.append("fleet")
        return frozenset({"w"})

    admission = _admission(runtime, fleet=fleet)
    with pytest.raises(UnknownAgentError, match=r"hosted: a$"):  # only the agents it may run are named
        await admission.admit(LIMITED, agent="x", prompt="", session_id="s1")
    with pytest.raises(AgentNotAllowedError):
        await admission.admit(LIMITED, agent="b", prompt="hi", session_id="s1")
    with pytest.raises(UnknownAgentError):
        await admission.admit(ANYONE, agent="w", prompt="hi", session_id="s1")
    assert asked == [], "the fleet is asked only for a run that may run anywhere"
    session = await admission.admit(ANYONE, agent="w", prompt="hi", session_id="s1", anywhere=True)
    assert (asked, session.keys.session_id) == (["fleet"], "s1")
    await admission.admit(ANYONE, agent="a", prompt="hi", session_id="s1", anywhere=True)
    assert asked == ["fleet"], "nor for an agent hosted here"
    with pytest.raises(InvalidRequestError, match="empty"):
        await admission.admit(ANYONE, agent="a", prompt=" \n", session_id="s1")
    with pytest.raises(InvalidRequestError, match="26 bytes"):  # as stored: `\u0001` is six bytes
        await admission.admit(ANYONE, agent="a", prompt="\x01" * 4, session_id="s1")
    with pytest.raises(InvalidIdError):
        await admission.admit(ANYONE, agent="a", prompt="hi", session_id="s:1")
    admission.stop_accepting()
    with pytest.raises(ShuttingDownError):
        await admission.admit(ANYONE, agent="a", prompt="hi", session_id="s1")
    with pytest.raises(UnknownAgentError):  # a bad request is still told so
        await admission.admit(ANYONE, agent="x", prompt="hi", session_id="s1")


async def test_admission_submits_the_prompt_as_the_runs_begin(runtime: Runtime) -> None:
    admission = _admission(runtime)
    session = await admission.admit(ANYONE, agent="a", prompt="hi", session_id="s1")
    submitted = await admission.submit(session, agent="a", prompt="hi", options={"model_settings": {"seed": 1}})
    [begin] = await session.stream.read_range(after="0-0", count=1)
    assert (begin.id, begin.body["user_prompt"], begin.body["agent"]) == (submitted.begin_event_id, "hi", "a")


async def test_a_limited_caller_sees_and_touches_only_runs_of_its_agents(runtime: Runtime) -> None:
    admission = _admission(runtime)
    for session_id, agent in (("s1", "a"), ("s2", "b")):
        await accept(_handle(runtime, session_id), runtime.queue, agent=agent, run_id=f"r-{session_id}")
    runs = await live_sessions(runtime, scope_id=1, user_id=1)
    assert [run.run_id for run in await admission.allowed_runs(LIMITED, runs)] == ["r-s1"]
    assert await admission.allowed_runs(ANYONE, runs) == runs
    assert await admission.run_of_allowed_agent(LIMITED, _handle(runtime, "s1")) == "r-s1"
    with pytest.raises(AgentNotAllowedError):
        await admission.run_of_allowed_agent(LIMITED, _handle(runtime, "s2"))
    assert await admission.run_of_allowed_agent(LIMITED, _handle(runtime, "s3")) is None, "no run"
    assert await admission.run_of_allowed_agent(ANYONE, _handle(runtime, "s2")) is None, "no check: no read"
    unnamed = Entry(id="1-0", type="begin", origin="pydantic-ai-stream", body={"run_id": "r"})
    assert admission.check_run_agent(ANYONE, unnamed) is None, "a caller that may run every agent"
    with pytest.raises(AgentNotAllowedError, match="an agent it does not name"):
        admission.check_run_agent(LIMITED, unnamed)
