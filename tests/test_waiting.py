"""Runs that wait for input: a queued run whose output is `DeferredToolRequests` waits in Redis, held by no
worker, until `SessionHandle.respond` answers its calls; then it goes on in the same stream (docs/waiting-runs.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import CallDeferred
from pydantic_ai.messages import ModelMessage, ModelRequest
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests
from redis.asyncio import Redis

from pydantic_ai_stream import (
    InvalidRequestError,
    NotWaitingError,
    RedisSession,
    RunNotFoundError,
    Runtime,
    SessionBusyError,
    SessionHandle,
    ToolAnswer,
    live_sessions,
)
from pydantic_ai_stream.server import Worker

WITHIN = 20.0
"""Seconds a step may take on a loaded 2-core machine."""


@dataclass
class Ops:
    """An agent that asks to drop a database (an approval) and to page someone (an external tool), then says
    what came back; it counts the drops, which must happen at most once."""

    drops: int = 0
    seen: list[list[tuple[str, Any]]] = field(default_factory=list)

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        last = messages[-1]
        returns = [p for p in last.parts if p.part_kind in ("tool-return", "retry-prompt")]
        if isinstance(last, ModelRequest) and returns:
            self.seen.append([(p.part_kind, p.content) for p in returns])
            yield "done"
            return
        yield {0: DeltaToolCall(name="drop_db", json_args='{"name": "staging"}', tool_call_id="c1")}
        yield {1: DeltaToolCall(name="page", json_args='{"msg": "db"}', tool_call_id="c2")}

    def agent(self) -> Agent[None, str | DeferredToolRequests]:
        agent: Agent[None, str | DeferredToolRequests] = Agent(
            FunctionModel(stream_function=self.stream), output_type=[str, DeferredToolRequests]
        )

        @agent.tool_plain(requires_approval=True)
        def drop_db(name: str) -> str:
            self.drops += 1
            return f"dropped {name}"

        @agent.tool_plain
        def page(msg: str) -> str:
            raise CallDeferred

        return agent


@pytest.fixture
async def ops(runtime: Runtime) -> AsyncIterator[tuple[Ops, Worker]]:
    ops = Ops()
    async with Worker(runtime=runtime, agents={"ops": ops.agent()}, concurrency=2) as worker:
        yield ops, worker


def _handle(runtime: Runtime, session_id: str = "s1") -> SessionHandle:
    return SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=session_id)


async def _until(handle: SessionHandle, done: Any, *, after: str = "0-0") -> list[dict[str, Any]]:
    """The session's entries after `after` up to the first that `done` accepts (within `WITHIN` seconds)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(WITHIN):
        async for entry in handle.listen(after=after, serialize=False, timeout=WITHIN):  # type: ignore[misc]
            seen.append(entry)
            if done(entry):
                return seen
    raise AssertionError(f"the stream ended first: {seen}")


def _input_required(entry: dict[str, Any]) -> bool:
    return entry["type"] == "event" and entry["body"].get("event") == "input_required"


def _end(entry: dict[str, Any]) -> bool:
    return entry["type"] == "end"


async def _wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def _waiting_run(runtime: Runtime, worker: Worker, session_id: str = "s1") -> tuple[str, dict[str, Any]]:
    handle = _handle(runtime, session_id)
    submitted = await handle.submit(agent="ops", body={"user_prompt": "clean up"})
    entries = await _until(handle, _input_required)
    await _wait_for(lambda: _no_run(worker), "the worker let go of the waiting run")
    return submitted.run_id, entries[-1]


async def _no_run(worker: Worker) -> bool:
    return worker.running == 0


async def test_a_run_waits_in_redis_and_goes_on_once_answered(
    redis: Redis, runtime: Runtime, ops: tuple[Ops, Worker]
) -> None:
    model, worker = ops
    run_id, waiting = await _waiting_run(runtime, worker)
    body = waiting["body"]
    assert body["calls"] == [
        {"tool_call_id": "c1", "tool_name": "drop_db", "args": {"name": "staging"}, "kind": "approval"},
        {"tool_call_id": "c2", "tool_name": "page", "args": {"msg": "db"}, "kind": "external"},
    ]
    assert body["deadline_ms"] > time.time() * 1000
    (active,) = await live_sessions(runtime, scope_id=1, user_id=1)
    assert (active.session_id, active.run_id, active.waiting, active.queued) == ("s1", run_id, True, False)

    handle = _handle(runtime)
    held = await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
    assert (held.continued, held.pending) == (False, ["c2"])
    assert model.drops == 0, "nothing runs before every call has an answer"
    done = await handle.respond(run_id, [ToolAnswer(tool_call_id="c2", value={"ack": True})])
    assert done.continued
    rest = await _until(handle, _end, after=waiting["id"])
    returns = [e["body"] for e in rest if e["body"].get("part_kind") == "tool-return"]
    assert len(returns) == 2, "each return once, in the same stream"
    assert {r["tool_call_id"]: r["content"] for r in returns} == {"c1": "dropped staging", "c2": {"ack": True}}
    assert model.seen == [[("tool-return", "dropped staging"), ("tool-return", {"ack": True})]]
    assert model.drops == 1
    again = await handle.respond(run_id, [ToolAnswer(tool_call_id="c2", value={"ack": True})])
    assert again.continued, "a retried answer gets the first one's reply"
    session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    kinds = [type(m).__name__ for m in session.msgs]
    assert kinds == ["ModelRequest", "ModelResponse", "ModelRequest", "ModelResponse"], "each step once"
    assert not await live_sessions(runtime, scope_id=1, user_id=1)


async def test_a_denial_and_an_external_error_reach_the_model(runtime: Runtime, ops: tuple[Ops, Worker]) -> None:
    model, worker = ops
    run_id, waiting = await _waiting_run(runtime, worker)
    handle = _handle(runtime)
    answers = [
        ToolAnswer(tool_call_id="c1", approved=False, denial_message="not on Fridays"),
        ToolAnswer(tool_call_id="c2", retry="pager down, try later"),
    ]
    assert (await handle.respond(run_id, answers)).continued
    await _until(handle, _end, after=waiting["id"])
    assert model.drops == 0
    ((denied, retried),) = model.seen
    assert denied == ("tool-return", "not on Fridays")
    assert "pager down, try later" in str(retried[1])


async def test_bad_answers_are_refused_and_write_nothing(runtime: Runtime, ops: tuple[Ops, Worker]) -> None:
    _, worker = ops
    run_id, _ = await _waiting_run(runtime, worker)
    handle = _handle(runtime)
    with pytest.raises(InvalidRequestError):
        await handle.respond(run_id, [ToolAnswer(tool_call_id="nope", approved=True)])
    with pytest.raises(InvalidRequestError):
        await handle.respond(run_id, [ToolAnswer(tool_call_id="c2", approved=True)])  # a result is wanted
    with pytest.raises(InvalidRequestError):
        await handle.respond(run_id, [])
    with pytest.raises(RunNotFoundError):
        await handle.respond("other", [ToolAnswer(tool_call_id="c1", approved=True)])
    other = SessionHandle.of(runtime, scope_id=1, user_id=2, session_id="s1")
    with pytest.raises(RunNotFoundError):  # another user's session: its keys are not this one's
        await other.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
    await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
    with pytest.raises(NotWaitingError):
        await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=False)])
    with pytest.raises(SessionBusyError):
        await handle.submit(agent="ops", body={"user_prompt": "again"})
