"""Runs that wait for input: a queued run whose output is `DeferredToolRequests` waits in Redis, held by no
worker, until `SessionHandle.respond` answers its calls; then it goes on in the same stream (docs/waiting-runs.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import CallDeferred
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests
from redis.asyncio import Redis

from pydantic_ai_stream import (
    UNKNOWN_OUTCOME,
    Attachment,
    InvalidRequestError,
    NotWaitingError,
    RedisSession,
    RunExistsError,
    RunNotFoundError,
    Runtime,
    SessionBusyError,
    SessionHandle,
    Settings,
    ToolAnswer,
    live_sessions,
    q,
)
from pydantic_ai_stream._durable.scripts import add_job
from pydantic_ai_stream._write.live import LiveRun
from pydantic_ai_stream.server import HostedDeps, Worker

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


async def _answered_with_no_worker(runtime: Runtime) -> tuple[Ops, str, dict[str, Any]]:
    """An `Ops` run that waited, its worker gone, then both calls answered: the model, the run id, its
    `input_required` entry."""
    model = Ops()
    async with Worker(runtime=runtime, agents={"ops": model.agent()}) as worker:
        run_id, waiting = await _waiting_run(runtime, worker)
    answers = [ToolAnswer(tool_call_id="c1", approved=True), ToolAnswer(tool_call_id="c2", value="paged")]
    assert (await _handle(runtime).respond(run_id, answers)).continued
    return model, run_id, waiting


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
    assert [s async for s in q(redis, 1, 1, runtime=runtime)] == [(1, 1, "s1")], "q() lists it"
    handle = _handle(runtime)
    assert not await handle.stream.reap(grace_ms=60_000), "the dead-run check leaves a waiting run alone"

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
    with pytest.raises(RunExistsError) as retried:  # a retried Run of the waiting run: its first reply, nothing run
        await handle.submit(agent="ops", body={"user_prompt": "clean up"}, run_id=run_id)
    (begin,) = await _until(handle, lambda _: True)
    assert retried.value.begin_event_id == begin["id"]
    (active,) = await live_sessions(runtime, scope_id=1, user_id=1)
    assert (active.run_id, active.waiting) == (run_id, True), "still waiting, for the same answers"


def _outline(entries: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["type"], e["body"].get("msg")) for e in entries if e["type"] != "event"]


async def _stored(redis: Redis, runtime: Runtime, session_id: str = "s1") -> list[ModelMessage]:
    session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id=session_id)
    await session.load()
    return session.msgs


async def test_a_cancelled_waiting_run_ends_and_the_next_run_closes_its_calls(
    redis: Redis, runtime: Runtime, ops: tuple[Ops, Worker]
) -> None:
    model, worker = ops
    run_id, waiting = await _waiting_run(runtime, worker)
    handle = _handle(runtime)
    assert await handle.cancel(run_id=run_id)
    rest = await _until(handle, _end, after=waiting["id"])
    assert _outline(rest) == [("error", "canceled"), ("end", None)]
    assert not await live_sessions(runtime, scope_id=1, user_id=1)
    assert await handle.cancel(run_id=run_id), "a retried cancel answers as the first did"
    with pytest.raises(NotWaitingError):
        await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
    # The next prompt follows the calls nobody answered: they are closed as not run, and the model sees it.
    await handle.submit(agent="ops", body={"user_prompt": "try again"})
    await _until(handle, _end)
    assert [(kind, content.split(":")[0]) for kind, content in model.seen[-1]] == [
        ("tool-return", "This tool call was not run"),
        ("tool-return", "This tool call was not run"),
    ]
    stored = await _stored(redis, runtime)
    closing = stored[2]
    assert isinstance(closing, ModelRequest)
    returns = [p for p in closing.parts if isinstance(p, ToolReturnPart)]
    assert [(p.tool_call_id, p.outcome) for p in returns] == [("c1", "denied"), ("c2", "denied")]
    assert model.drops == 0


async def test_a_wait_past_its_deadline_ends_with_input_expired(
    redis: Redis, runtime: Runtime, ops: tuple[Ops, Worker]
) -> None:
    runtime.settings.input_wait = 1
    _, worker = ops
    run_id, waiting = await _waiting_run(runtime, worker)
    handle = _handle(runtime)

    async def flag_lapsed() -> bool:
        return not await redis.exists(handle.keys.live)

    await _wait_for(flag_lapsed, "the wait's flag lapses at its deadline")
    with pytest.raises(NotWaitingError):
        await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
    rest = await _until(handle, _end, after=waiting["id"])
    assert _outline(rest) == [("error", "input expired"), ("end", None)]
    assert not await live_sessions(runtime, scope_id=1, user_id=1)


async def test_the_dead_run_check_ends_an_expired_wait_as_expired(redis: Redis, runtime: Runtime) -> None:
    keys = _handle(runtime).keys
    stream = runtime.stream(keys)
    await redis.xadd(keys.stream, {"type": "begin", "origin": "pydantic-ai-stream", "body": '{"run_id":"r1"}'})
    body = '{"idx":0,"event":"input_required","calls":[],"deadline_ms":1}'
    await redis.xadd(keys.stream, {"type": "event", "origin": "pydantic-ai-stream", "body": body})
    await redis.hset(keys.input, mapping={"run": "r1", "state": "waiting"})
    assert await stream.reap(grace_ms=60_000)
    entries = await stream.read_range(after="0-0", count=10)
    assert [(e.type, e.body) for e in entries[-2:]] == [("error", {"msg": "input expired"}), ("end", {"run_id": "r1"})]
    assert await redis.hget(keys.input, "state") == b"expired"


async def test_a_new_prompt_interrupts_a_waiting_run(redis: Redis, runtime: Runtime, ops: tuple[Ops, Worker]) -> None:
    model, worker = ops
    run_id, _ = await _waiting_run(runtime, worker)
    handle = _handle(runtime)
    submitted = await handle.submit(agent="ops", body={"user_prompt": "never mind"}, if_busy="interrupt")
    assert submitted.run_id != run_id
    with pytest.raises(NotWaitingError):
        await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
    entries = await _until(handle, _end)  # the new run, from its `begin`: its model sees the calls closed
    assert entries[0]["body"]["run_id"] == submitted.run_id
    assert [kind for kind, _ in model.seen[-1]] == ["tool-return", "tool-return"]
    assert model.drops == 0


async def test_a_worker_dying_right_after_the_answer_runs_no_tool_twice(
    redis: Redis, runtime: Runtime, settings: Settings
) -> None:
    """The answer queues the run; a worker adopts it and dies before anything is checkpointed: the next worker
    takes it over as attempt 2 from the answers again, the approved call (of a tool not marked safe to retry)
    answered as of unknown outcome, the external result given again."""
    model, run_id, waiting = await _answered_with_no_worker(runtime)
    handle = _handle(runtime)
    async with Runtime(redis=redis, settings=settings) as dead:
        live = await LiveRun.adopt(dead, handle.keys, run_id=run_id)
        assert live is not None, "the continuation is queued like any run"
        dead.leases.release(live.lease)  # its worker dies: its lease lapses, nothing was written
        await redis.delete(handle.keys.live)
    async with Worker(runtime=runtime, agents={"ops": model.agent()}):
        rest = await _until(handle, _end, after=waiting["id"])
    assert [e["body"].get("attempt") for e in rest if e["body"].get("event") == "resumed"] == [2]
    marker = next(n for n, e in enumerate(rest) if e["body"].get("event") == "resumed")
    after = [(e["body"].get("event"), e["body"].get("part_kind"), e["body"].get("tool_call_id")) for e in rest[marker:]]
    calls = after.index(("part_start", "tool-call", "c1")), after.index(("part_start", "tool-call", "c2"))
    returns = after.index(("part_start", "tool-return", "c1")), after.index(("part_start", "tool-return", "c2"))
    assert max(calls) < min(returns), "the marker hid node 0 from listeners: its calls come again, then the returns"
    assert model.drops == 0, "the approved tool is not run again: it may have run"
    ((unknown, paged),) = model.seen
    assert unknown == ("tool-return", UNKNOWN_OUTCOME)
    assert paged == ("tool-return", "paged")
    kinds = [type(m).__name__ for m in await _stored(redis, runtime)]
    assert kinds == ["ModelRequest", "ModelResponse", "ModelRequest", "ModelResponse"], "each step once"


async def test_a_rollback_drops_the_waiting_runs_messages(
    redis: Redis, runtime: Runtime, ops: tuple[Ops, Worker]
) -> None:
    _, worker = ops
    await _waiting_run(runtime, worker)
    handle = _handle(runtime)
    await handle.submit(agent="ops", body={"user_prompt": "start over"}, if_busy="rollback")
    await _until(handle, _input_required)  # the new run waits in turn

    async def prompts() -> list[Any]:
        return [p.content for m in await _stored(redis, runtime) for p in m.parts if p.part_kind == "user-prompt"]

    async def saved() -> bool:
        return "start over" in await prompts()

    await _wait_for(saved, "the new run saves its messages")
    assert await prompts() == ["start over"], "the rolled back run's messages are gone"
    assert len(await _stored(redis, runtime)) == 2


async def test_a_worker_dying_after_saving_before_the_wait_is_recorded_leaves_it_waiting(
    redis: Redis, runtime: Runtime, settings: Settings
) -> None:
    """Its worker saved the conversation (ending on the deferred calls) and died before the wait was recorded:
    the next worker replays the saved node, finds the same calls again without running a tool or calling the
    model, and records the wait; the answers then go on as usual."""
    model = Ops()
    handle = _handle(runtime)
    run_id = (await handle.submit(agent="ops", body={"user_prompt": "clean up"}, run_id="r1")).run_id
    async with Runtime(redis=redis, settings=settings) as dead:
        live = await LiveRun.adopt(dead, handle.keys, run_id=run_id)
        assert live is not None
        calls = [ToolCallPart("drop_db", {"name": "staging"}, tool_call_id="c1"),
                 ToolCallPart("page", {"msg": "db"}, tool_call_id="c2")]  # fmt: skip
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        session.add_msgs([ModelRequest(parts=[UserPromptPart("clean up")], run_id="r1"),
                          ModelResponse(parts=calls, run_id="r1")])  # fmt: skip
        await session.save()
        dead.leases.release(live.lease)  # the worker dies: its lease lapses, no wait is recorded
        await redis.delete(handle.keys.live)
    async with Worker(runtime=runtime, agents={"ops": model.agent()}) as worker:
        entries = await _until(handle, _input_required)
        await _wait_for(lambda: _no_run(worker), "the worker let go of the waiting run")
        assert [e["body"].get("attempt") for e in entries if e["body"].get("event") == "resumed"] == [2]
        assert [c["tool_call_id"] for c in entries[-1]["body"]["calls"]] == ["c1", "c2"]
        (active,) = await live_sessions(runtime, scope_id=1, user_id=1)
        assert active.waiting
        answers = [ToolAnswer(tool_call_id="c1", approved=True), ToolAnswer(tool_call_id="c2", value="paged")]
        assert (await handle.respond(run_id, answers)).continued
        await _until(handle, _end, after=entries[-1]["id"])
    assert model.drops == 1
    assert len(model.seen) == 1, "the model was called once, after the answers"
    kinds = [type(m).__name__ for m in await _stored(redis, runtime)]
    assert kinds == ["ModelRequest", "ModelResponse", "ModelRequest", "ModelResponse"], "each step once"


async def test_an_oversized_answer_is_refused(runtime: Runtime, ops: tuple[Ops, Worker]) -> None:
    _, worker = ops
    run_id, _ = await _waiting_run(runtime, worker)
    with pytest.raises(InvalidRequestError, match="the limit is"):
        await _handle(runtime).respond(run_id, [ToolAnswer(tool_call_id="c2", value="x" * (1 << 20))])


async def test_a_worker_dying_before_the_wait_is_written_asks_for_the_approvals_again(
    redis: Redis, runtime: Runtime, settings: Settings
) -> None:
    """Its worker checkpointed the response whose calls all need approval and died before it wrote the wait:
    none of them can have run, so the next worker lets pydantic-ai ask for them again, and the run waits."""
    drops: list[str] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if any(p.part_kind == "tool-return" for p in messages[-1].parts):
            yield "done"
            return
        yield {0: DeltaToolCall(name="drop_db", json_args='{"name": "staging"}', tool_call_id="c1")}

    agent: Agent[None, str | DeferredToolRequests] = Agent(
        FunctionModel(stream_function=stream), output_type=[str, DeferredToolRequests]
    )

    @agent.tool_plain(requires_approval=True)
    def drop_db(name: str) -> str:
        drops.append(name)
        return "dropped"

    handle = _handle(runtime)
    run_id = (await handle.submit(agent="ops", body={"user_prompt": "clean up"}, run_id="r1")).run_id
    async with Runtime(redis=redis, settings=settings) as dead:
        live = await LiveRun.adopt(dead, handle.keys, run_id=run_id)
        assert live is not None
        response = ModelResponse(parts=[ToolCallPart("drop_db", {"name": "staging"}, tool_call_id="c1")], run_id="r1")
        await live.checkpoint(0, [ModelRequest(parts=[UserPromptPart("clean up")], run_id="r1"), response])
        dead.leases.release(live.lease)  # the worker dies while the calls were being handled
        await redis.delete(handle.keys.live)
    async with Worker(runtime=runtime, agents={"ops": agent}) as worker:
        entries = await _until(handle, _input_required)
        assert [e["body"].get("attempt") for e in entries if e["body"].get("event") == "resumed"] == [2]
        await _wait_for(lambda: _no_run(worker), "the worker let go of the waiting run")
        (active,) = await live_sessions(runtime, scope_id=1, user_id=1)
        assert active.waiting
        assert (await handle.respond(run_id, [ToolAnswer(tool_call_id="c1", approved=True)])).continued
        await _until(handle, _end, after=entries[-1]["id"])
    assert drops == ["staging"]


async def test_a_waiting_runs_context_and_attachments_reach_the_part_after_the_answer(runtime: Runtime) -> None:
    """The run's context goes with the job queued again (its deps have it after the wait), and its attachments
    stay in its history: the model sees them again after the answer, and nothing asks for them twice."""
    seen: list[tuple[str, list[str]]] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        prompt = next(
            p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)
        )
        assert not isinstance(prompt.content, str)
        parts = [item if isinstance(item, str) else f"{item.media_type}:{len(item.data)}" for item in prompt.content]
        last = messages[-1]
        if isinstance(last, ModelRequest) and any(p.part_kind == "tool-return" for p in last.parts):
            seen.append(("after", parts))
            yield "done"
            return
        seen.append(("before", parts))
        yield {0: DeltaToolCall(name="locale", json_args="{}", tool_call_id="c1")}

    agent: Agent[HostedDeps[Any], str | DeferredToolRequests] = Agent(
        FunctionModel(stream_function=stream), output_type=[str, DeferredToolRequests], deps_type=HostedDeps[Any]
    )

    @agent.tool(requires_approval=True)
    def locale(ctx: RunContext[HostedDeps[Any]]) -> str:
        return f"locale {ctx.deps.context['locale']}"

    picture = Attachment(data=b"\x89PNG....", media_type="image/png", name="p.png")
    async with Worker(runtime=runtime, agents={"ctx": agent}, concurrency=2) as worker:
        handle = _handle(runtime)
        submitted = await handle.submit(
            agent="ctx", body={"user_prompt": "look"}, context={"locale": "de-CH"}, attachments=[picture]
        )
        waiting = (await _until(handle, _input_required))[-1]
        await _wait_for(lambda: _no_run(worker), "the worker let go of the waiting run")
        assert (await handle.respond(submitted.run_id, [ToolAnswer(tool_call_id="c1", approved=True)])).continued
        rest = await _until(handle, _end, after=waiting["id"])
    returns = [e["body"]["content"] for e in rest if e["body"].get("part_kind") == "tool-return"]
    assert returns == ["locale de-CH"], "the context reached the deps of the part after the wait"
    assert seen == [("before", ["look", "image/png:8"]), ("after", ["look", "image/png:8"])]
    assert not [e for e in rest if e["type"] == "error"]


async def test_whoever_reads_input_required_can_answer_at_once(runtime: Runtime, ops: tuple[Ops, Worker]) -> None:
    """The event and the wait are written in one step: an answer sent the moment the event arrives finds the run
    waiting (it was refused as "not waiting" while the run still saved its conversation)."""
    model, _ = ops
    handle = _handle(runtime)
    submitted = await handle.submit(agent="ops", body={"user_prompt": "clean up"})
    async with asyncio.timeout(WITHIN):
        async for entry in handle.listen(serialize=False, timeout=WITHIN):  # type: ignore[misc]
            if _input_required(entry):
                held = await handle.respond(submitted.run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
                break
    assert (held.continued, held.pending) == (False, ["c2"])
    assert (await handle.respond(submitted.run_id, [ToolAnswer(tool_call_id="c2", value="ok")])).continued
    await _until(handle, _end, after=entry["id"])
    assert model.drops == 1


async def test_a_job_left_unacknowledged_by_the_first_part_goes_on_with_the_answers(
    redis: Redis, runtime: Runtime
) -> None:
    """The worker the run waited on died before acknowledging its job, which a worker then takes before the
    continuation's: the run still goes on from the answers (it crashed, `run_id already appears in
    message_history`, and the answers were lost)."""
    model, _, waiting = await _answered_with_no_worker(runtime)
    handle = _handle(runtime)
    jobs = runtime.queue.keys.jobs(1)
    ((job_id, fields),) = await redis.xrange(jobs)  # the continuation's job, queued by the answer
    assert fields[b"continues"] == b"1"
    await redis.xdel(jobs, job_id)
    first_part = {k.decode(): v.decode() for k, v in fields.items() if k != b"continues"}
    await add_job(redis, runtime.queue.keys, scope_id=1, fields=first_part)  # its first part's job, taken first
    async with Worker(runtime=runtime, agents={"ops": model.agent()}):
        rest = await _until(handle, _end, after=waiting["id"])
    assert not [e for e in rest if e["type"] == "error"]
    assert model.seen == [[("tool-return", "dropped staging"), ("tool-return", "paged")]]
    assert model.drops == 1
    kinds = [type(m).__name__ for m in await _stored(redis, runtime)]
    assert kinds == ["ModelRequest", "ModelResponse", "ModelRequest", "ModelResponse"], "each step once"
