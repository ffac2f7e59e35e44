"""`run()` end to end against a real Redis: events, cancellation, one run per session, errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis

from pydantic_ai_stream import (
    AgxCanceledError,
    InvalidIdError,
    PydanticAIStreamError,
    RunExistsError,
    Runtime,
    SessionBusyError,
    run,
    start_run,
)
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


def _agent(**model: object) -> Agent[ScopedDeps, str]:
    agent = Agent(scripted_model(**model), deps_type=ScopedDeps)  # type: ignore[arg-type]

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    return agent


async def test_events_of_a_run_with_a_tool(runtime: Runtime) -> None:
    agent = _agent(tokens=["It is ", "sunny."], tool="get_weather", tool_args='{"city": "Paris"}')
    store: dict[str, list] = {}
    listener = Collector(ScopedDeps.on(runtime, user_id=7, session_id="s1"))
    await run(
        MemorySession(session_id="s1", store=store),
        agent,
        "weather?",
        ScopedDeps.on(runtime, user_id=7, session_id="s1"),
    )
    events = await listener.done()

    assert [e["type"] for e in events[:1] + events[-1:]] == ["begin", "end"]
    assert events[0]["body"]["user_prompt"] == "weather?"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert len(set(ids)) == len(ids)
    [call] = bodies(events, part_kind="tool-call")
    assert call == {
        "idx": 0, "event": "part_start", "event_idx": 0, "part_kind": "tool-call",
        "tool_name": "get_weather", "tool_call_id": "call-1", "args": {"city": "Paris"},
    }  # fmt: skip
    [ret] = bodies(events, part_kind="tool-return")
    assert (ret["idx"], ret["tool_call_id"], ret["content"]) == (0, "call-1", "sunny in Paris")
    assert next(b["event"] for b in bodies(events, idx=1)) == "llm-begin"
    assert bodies(events, event="answer")
    assert text_of(events) == "It is sunny."
    # The conversation was saved whole.
    assert [type(m).__name__ for m in store["s1"]] == ["ModelRequest", "ModelResponse"] * 2


async def test_cancel_mid_token_stops_at_once_and_keeps_the_partial_answer(runtime: Runtime, redis_url: str) -> None:
    renew_slowly(runtime.settings)
    agent = _agent(tokens=["one ", "two "], gate=asyncio.Event())  # the model stalls mid-answer
    store: dict[str, list] = {}
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    task = asyncio.create_task(
        run(
            MemorySession(session_id="s1", store=store),
            agent,
            "count",
            ScopedDeps.on(runtime, user_id=1, session_id="s1"),
        )
    )
    await listener.wait_for(has_text("two "))

    other_client = Redis.from_url(redis_url)  # as another process would
    async with Runtime(redis=other_client, settings=runtime.settings) as elsewhere:
        started = time.monotonic()
        assert await ScopedDeps.on(elsewhere, user_id=1, session_id="s1").cancel() is True
        with pytest.raises(AgxCanceledError):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < CANCEL_WITHIN, "by Pub/Sub, not left to the next renewal"
    await other_client.aclose()

    events = await listener.done()
    assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [("error", "canceled"), ("end", None)]
    [_request, response] = store["s1"]
    assert isinstance(response, ModelResponse)
    assert response.state == "interrupted"
    assert response.parts[0].content == "one two "  # type: ignore[union-attr]
    assert await ScopedDeps.on(runtime, user_id=1, session_id="s1").cancel() is False


class StorageError(Exception):
    pass


@dataclass(kw_only=True)
class FailingSession(MemorySession):
    async def save(self) -> None:
        raise StorageError("database is gone")


@pytest.mark.parametrize("how", ["cancel", "task"])
async def test_a_cancelled_run_whose_save_fails_reports_both(runtime: Runtime, how: str) -> None:
    agent = _agent(tokens=["one "], gate=asyncio.Event())
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    task = asyncio.create_task(run(FailingSession(session_id="s1"), agent, "count", deps))
    await listener.wait_for(has_text("one "))
    if how == "cancel":
        assert await ScopedDeps.on(runtime, user_id=1, session_id="s1").cancel() is True
        with pytest.raises(AgxCanceledError) as error:
            await asyncio.wait_for(task, 5)
        assert isinstance(error.value.__cause__, StorageError)
    else:  # the task running it is cancelled (a shutdown)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    events = await listener.done()
    assert [(e["type"], e["body"].get("msg")) for e in events[-3:]] == [
        ("error", "canceled"),
        ("error", "save failed - database is gone"),
        ("end", None),
    ]


async def test_cancel_mid_tool_call_stops_at_once(runtime: Runtime) -> None:
    renew_slowly(runtime.settings)
    tool_started, never = asyncio.Event(), asyncio.Event()
    agent = Agent(scripted_model(tokens=["done"], tool="slow_tool", tool_args='{"n": 1}'), deps_type=ScopedDeps)

    @agent.tool_plain
    async def slow_tool(n: int) -> str:
        tool_started.set()
        await never.wait()
        return "unreachable"

    store: dict[str, list] = {}
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    task = asyncio.create_task(run(MemorySession(session_id="s1", store=store), agent, "go", deps))
    await asyncio.wait_for(tool_started.wait(), 5)
    started = time.monotonic()
    assert await ScopedDeps.on(runtime, user_id=1, session_id="s1").cancel() is True
    with pytest.raises(AgxCanceledError):
        await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < CANCEL_WITHIN, "by Pub/Sub, not left to the next renewal"

    events = await listener.done()
    assert bodies(events, part_kind="tool-call")[0]["args"] == {"n": 1}
    assert [e["type"] for e in events[-2:]] == ["error", "end"]
    # The saved history is resumable: the dangling call is closed out.
    parts = [p for m in store["s1"] for p in m.parts]
    assert any(isinstance(p, ToolCallPart) for p in parts)
    returns = [p for p in parts if isinstance(p, ToolReturnPart)]
    assert all(p.outcome == "interrupted" for p in returns)


async def test_a_second_concurrent_run_is_refused_and_writes_nothing(redis: Redis, runtime: Runtime) -> None:
    gate = asyncio.Event()
    agent = _agent(tokens=["a"], gate=gate)
    store: dict[str, list] = {}
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    first = asyncio.create_task(
        run(
            MemorySession(session_id="s1", store=store),
            agent,
            "1",
            ScopedDeps.on(runtime, user_id=1, session_id="s1"),
        )
    )
    await listener.wait_for(has_text("a"))
    key = ScopedDeps.on(runtime, user_id=1, session_id="s1").key()
    length = await redis.xlen(key)

    second = MemorySession(session_id="s1", store=store)
    with pytest.raises(SessionBusyError, match="s1"):
        await run(second, agent, "2", ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    assert await redis.xlen(key) == length
    assert second.saves == 0

    gate.set()
    await asyncio.wait_for(first, 5)
    events = await listener.done()
    assert [e["body"].get("user_prompt") for e in events if e["type"] == "begin"] == ["1"]
    assert events[-1]["type"] == "end"


async def test_a_run_with_the_id_of_an_existing_run_does_not_run_again(runtime: Runtime) -> None:
    gate = asyncio.Event()
    calls: list[int] = []

    def count(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(1)
        return ModelResponse(parts=[TextPart("again")])

    agent = _agent(tokens=["a"], gate=gate)
    agent_again = Agent(FunctionModel(count), deps_type=ScopedDeps)
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1", run_id="r-1")
    first = await start_run(MemorySession(session_id="s1"), agent, "1", deps)
    await listener.wait_for(has_text("a"))
    for attempt in (run, start_run):  # while the run is live
        with pytest.raises(RunExistsError) as exists:
            await attempt(MemorySession(session_id="s1"), agent_again, "1", ScopedDeps(**_ids(deps)))
        assert (exists.value.run_id, exists.value.begin_event_id) == ("r-1", deps.begin_event_id)
    gate.set()
    await asyncio.wait_for(first, 5)
    events = await listener.done()
    with pytest.raises(RunExistsError) as exists:  # and once it ended, while its stream is kept
        await run(MemorySession(session_id="s1"), agent_again, "1", ScopedDeps(**_ids(deps)))
    assert exists.value.begin_event_id == deps.begin_event_id
    assert calls == []
    assert [e async for e in deps.listen(serialize=False)] == events


async def test_a_begin_body_cannot_rename_the_run(runtime: Runtime) -> None:
    deps = ScopedDeps.on(runtime, user_id=1, session_id="s1", run_id="r-1")
    await deps.start(body={"run_id": "r-2", "session_id": "elsewhere", "note": "kept"})
    await deps.stop()
    begin, *_ = [e async for e in deps.listen(serialize=False)]
    assert begin["body"] == {"session_id": "s1", "run_id": "r-1", "note": "kept"}
    with pytest.raises(RunExistsError):  # still recognised as run r-1
        await ScopedDeps.on(runtime, user_id=1, session_id="s1", run_id="r-1").start()


def _ids(deps: ScopedDeps) -> dict[str, Any]:
    return {
        "redis": deps.redis,
        "runtime": deps.runtime,
        "user_id": deps.user_id,
        "session_id": deps.session_id,
        "run_id": deps.run_id,
    }


@pytest.mark.parametrize("session_id", ["a:b", "*", "a?", "[x", "{s}", "has space", "", "x" * 129])
async def test_unsafe_ids_are_refused_before_anything_is_written(
    redis: Redis, runtime: Runtime, session_id: str
) -> None:
    agent = _agent(tokens=["a"])
    session = MemorySession(session_id=session_id)
    with pytest.raises(InvalidIdError):
        await run(session, agent, "hi", ScopedDeps.on(runtime, user_id=1, session_id=session_id))
    assert [k async for k in redis.scan_iter(f"{runtime.settings.redis_prefix}*")] == []
    assert session.saves == 0


async def test_a_crash_is_reported_and_re_raised(runtime: Runtime) -> None:
    agent = Agent(scripted_model(tokens=[], tool="broken", tool_args="{}"), deps_type=ScopedDeps)

    @agent.tool_plain
    def broken() -> str:
        raise RuntimeError("disk on fire")

    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        await run(MemorySession(session_id="s1"), agent, "go", ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    events = await listener.done()
    assert events[-2]["type"] == "error"
    assert "disk on fire" in events[-2]["body"]["msg"]
    assert events[-1]["type"] == "end"
    assert not await ScopedDeps.on(runtime, user_id=1, session_id="s1").is_live()


async def test_cancelling_the_task_ends_the_stream_and_keeps_history(runtime: Runtime) -> None:
    agent = _agent(tokens=["partial"], gate=asyncio.Event())
    store: dict[str, list] = {}
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"))
    task = asyncio.create_task(
        run(
            MemorySession(session_id="s1", store=store),
            agent,
            "hi",
            ScopedDeps.on(runtime, user_id=1, session_id="s1"),
        )
    )
    await listener.wait_for(has_text("partial"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events = await listener.done()
    assert [e["type"] for e in events[-2:]] == ["error", "end"]
    assert store["s1"][-1].parts[0].content == "partial"  # type: ignore[union-attr]


async def test_history_carries_over_between_runs(runtime: Runtime) -> None:
    store: dict[str, list] = {}
    for prompt in ("first", "second"):
        await run(
            MemorySession(session_id="s1", store=store),
            _agent(tokens=["ok"]),
            prompt,
            ScopedDeps.on(runtime, user_id=1, session_id="s1"),
        )
    session = MemorySession(session_id="s1", store=store)
    await session.load()
    assert session.get_user_prompt() == "first"
    assert len(session.msgs) == 4
    # A new run starts a fresh stream: a late joiner sees the latest run from its begin.
    events = [e async for e in ScopedDeps.on(runtime, user_id=1, session_id="s1").listen(serialize=False)]
    assert events[0]["body"]["user_prompt"] == "second"  # type: ignore[index]


async def test_add_needs_a_started_run(runtime: Runtime) -> None:
    with pytest.raises(PydanticAIStreamError, match="start"):
        await ScopedDeps.on(runtime, user_id=1, session_id="s1").add_info({"x": 1})
