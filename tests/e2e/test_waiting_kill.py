"""kill -9 of real worker processes around a wait for input (docs/waiting-runs.md): a worker killed while its run
waits held nothing, and another goes on once answered; a worker killed right after the answer, inside an approved
tool or in the model's answer after the tools, is taken over as the design says: no tool not safe to retry runs
twice, the stream has one `input_required` and one `end`, the stored conversation each step once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from grpc_agents import guarded, tool_calls
from redis.asyncio import Redis
from test_grpc_process import worker_process
from test_recovery import SHORT_LEASES, _conversation, _file, _until, marks, settings

from pydantic_ai_stream import (
    UNKNOWN_OUTCOME,
    Entry,
    RedisSession,
    Runtime,
    SessionHandle,
    Settings,
    ToolAnswer,
    live_sessions,
)
from pydantic_ai_stream.client import StreamClient, approve, external_result
from pydantic_ai_stream.server import ServerSettings, Worker, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import server_keys

__all__ = ["marks", "settings"]  # the recovery tests' fixtures, used here

GUARDED = ("--agent", "guarded=grpc_agents:guarded", "--no-demo", "--grace", "0.2")
WITHIN = 20.0
"""Seconds a step may take on a loaded 2-core machine."""
CALLS = [
    ("request", [("user-prompt", "clean up")]),
    ("response", [("tool-call", "drop_db"), ("tool-call", "restart"), ("tool-call", "page")]),
]


def _input_required(entry: Entry) -> bool:
    return entry.body.get("event") == "input_required"


async def _let_go(runtime: Runtime) -> None:
    """Wait until no job is pending in the run queue: the worker acknowledged the job of the run that waits."""
    deadline = time.monotonic() + WITHIN
    while await runtime.queue.abandoned(idle_ms=0):
        assert time.monotonic() < deadline, "the worker let go of the waiting run's job"
        await asyncio.sleep(0.02)  # polling Redis: the worker process's ack shows only there


async def _states(client: StreamClient) -> list[tuple[str, int]]:
    response = await client.stub.ListActive(pb.ListActiveRequest(), metadata=client.metadata)
    return [(s.session_id, s.state) for s in response.sessions]


async def _stored(runtime: Runtime, handle: SessionHandle) -> list[Any]:
    keys = handle.keys
    session = RedisSession(
        redis=runtime.redis, runtime=runtime, scope_id=keys.scope_id, user_id=keys.user_id, session_id=keys.session_id
    )
    await session.load()
    return _conversation(session.msgs)


def _checked(entries: list[Entry], seen: list[Entry]) -> list[dict[str, Any]]:
    """The stream as a listener got it, with one `begin`, one `input_required` and one `end` and no error; the
    `resumed` markers' bodies."""
    assert [e.id for e in seen] == [e.id for e in entries], "the listener got the stream as it is"
    assert [e.type for e in entries if e.type != "event"] == ["begin", "end"], [e.body for e in entries]
    assert len([e for e in entries if _input_required(e)]) == 1
    return [e.body for e in entries if e.body.get("event") == "resumed"]


def _answer(entries: list[Entry]) -> str:
    """The model's text after the answers: what it saw of each call."""
    waited = next(i for i, e in enumerate(entries) if _input_required(e))
    texts = [e.body for e in entries[waited:] if e.body.get("part_kind") == "text"]
    return "".join(str(b.get("content", "")) + str(b.get("content_delta", "")) for b in texts)


async def test_a_worker_killed_while_its_run_waits_held_nothing_and_another_process_goes_on(
    redis: Redis, redis_url: str, settings: Settings, marks: Path
) -> None:
    """Run over gRPC on an API replica; its worker process is killed -9 once the run waits: the run is still listed
    as waiting, the dead-run check finds nothing lost, and the answers (gRPC Respond) go on in another worker
    process, where each approved tool runs once."""
    config = ServerSettings(
        redis_url=redis_url, port=0, concurrency=0, agents={"guarded": "grpc_agents:guarded"}, demo=False
    )  # the API, no worker
    env = {**SHORT_LEASES, "TEST_TOOL_MARKS": str(marks)}
    async with (
        Runtime(redis=redis, settings=settings) as runtime,
        running_server(config, settings=settings) as api,
        StreamClient(f"127.0.0.1:{api.port}") as client,
    ):
        handle = SessionHandle(runtime=runtime, keys=server_keys(api, "s1"))
        with worker_process(redis_url, settings.redis_prefix, *GUARDED, env=env) as first:
            run_id = (await client.run("guarded", "s1", "clean up")).run_id
            listening = handle.listen_entries(timeout=60)
            seen = await _until(listening, _input_required)
            await _let_go(runtime)
            first.kill()
            await asyncio.to_thread(first.wait, 10)
        assert await _states(client) == [("s1", pb.RUN_STATE_WAITING_FOR_INPUT)], "still waiting, held by nobody"
        assert not await handle.stream.reap(grace_ms=60_000), "the dead-run check finds the run waiting, not lost"
        assert (tool_calls("drop_db"), tool_calls("restart")) == (0, 0)
        answers = [approve("c1"), approve("c2"), external_result("c3", "paged")]
        assert (await client.respond("s1", run_id, answers)).continued
        with worker_process(redis_url, settings.redis_prefix, *GUARDED, env=env):
            seen += [entry async for entry in listening if entry is not None]
        entries = await handle.stream.read_range(after="0-0", count=10_000)
        assert _checked(entries, seen) == [], "nothing was taken over: the killed worker held nothing"
        assert _answer(entries) == "done: drop_db=dropped staging; restart=restarted api; page=paged"
        assert (tool_calls("drop_db"), tool_calls("restart")) == (1, 1), "each approved tool ran once"
        assert await _stored(runtime, handle) == [
            *CALLS,
            ("request", [("tool-return", ("drop_db", "dropped staging")), ("tool-return", ("restart", "restarted api")),
                         ("tool-return", ("page", "paged"))]),
            ("response", [("text", "done: drop_db=dropped staging; restart=restarted api; page=paged")]),
        ], "each step once"  # fmt: skip
        assert await _states(client) == []


DROPPED, RESTARTED = ("drop_db", "dropped staging"), ("restart", "restarted api")
# Where the worker that went on with the answers is killed: the file it holds on, the mark that shows it got there
# (a file, or the answer's first text), what the model sees of each approved call once another worker takes over,
# and how many times each approved tool ran in all.
POINTS = {
    # Inside `drop_db` (not safe to retry), once it counted itself: it may have run, the takeover says so.
    "in drop_db": ("hang-drop_db", "drop_db.1", [("drop_db", UNKNOWN_OUTCOME), RESTARTED], (1, 1)),
    # Inside `restart` (safe to retry), after `drop_db` ran: `restart` runs again, `drop_db` does not.
    "in restart": ("hang-restart", "restart.1", [("drop_db", UNKNOWN_OUTCOME), RESTARTED], (1, 2)),
    # In the model's answer after the tools: their returns were checkpointed, nothing runs again.
    "in the answer": ("hold-answer", None, [DROPPED, RESTARTED], (1, 1)),
}


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_worker_killed_right_after_the_answer_is_taken_over_as_designed(
    redis: Redis, redis_url: str, settings: Settings, marks: Path, point: str
) -> None:
    """The answers (`SessionHandle.respond`) go on in the worker process that ran the first part; it is killed -9
    at `point`; a worker in this process takes the run over (attempt 2): each approved tool ran as the design says
    (one not safe to retry never twice), one `input_required`, one `end`, each step once in the conversation."""
    hold, reached, returns, ran = POINTS[point]
    (marks / hold).touch()
    env = {**SHORT_LEASES, "TEST_TOOL_MARKS": str(marks)}
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        with worker_process(redis_url, settings.redis_prefix, *GUARDED, env=env) as first:
            run_id = (await handle.submit(agent="guarded", body={"user_prompt": "clean up"})).run_id
            listening = handle.listen_entries(timeout=60)
            seen = await _until(listening, _input_required)
            answers = [
                ToolAnswer(tool_call_id="c1", approved=True),
                ToolAnswer(tool_call_id="c2", approved=True),
                ToolAnswer(tool_call_id="c3", value="paged"),
            ]
            assert (await handle.respond(run_id, answers)).continued
            if reached is None:
                seen += await _until(listening, lambda e: e.body.get("content") == "done: ")  # node 1's first text
            else:
                await _file(marks / reached, timeout=WITHIN)
            first.kill()
            await asyncio.to_thread(first.wait, 10)
        (marks / hold).unlink()
        async with Worker(runtime=runtime, agents={"guarded": guarded}):
            seen += [entry async for entry in listening if entry is not None]
        entries = await handle.stream.read_range(after="0-0", count=10_000)
        markers = _checked(entries, seen)
        assert [m["attempt"] for m in markers] == [2], "taken over once"
        said = "; ".join(f"{name}={content}" for name, content in [*returns, ("page", "paged")])
        assert _answer(entries).endswith(f"done: {said}"), "the model saw each call's return once"
        assert (tool_calls("drop_db"), tool_calls("restart")) == ran
        assert await _stored(runtime, handle) == [
            *CALLS,
            ("request", [("tool-return", ret) for ret in [*returns, ("page", "paged")]]),
            ("response", [("text", f"done: {said}")]),
        ], "each step once"
        assert await live_sessions(runtime, scope_id=1, user_id=1) == []
