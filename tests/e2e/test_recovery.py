"""Crash recovery: a run whose worker dies (kill -9), stalls past its lease (SIGSTOP) or is deployed away
(SIGTERM) is resumed by another worker; listeners see one stream with a `resumed` marker, and the run's
work is kept once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from grpc_agents import PACED_TOKENS, STEPS_TEXT, model_inputs, paced, recalling, steps, tool_calls
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from redis.asyncio import Redis, RedisCluster
from test_grpc_process import serve_process, worker_process

from conftest import RedisServer
from pydantic_ai_stream import (
    UNKNOWN_OUTCOME,
    Entry,
    PostgresSession,
    RedisSession,
    Runtime,
    SessionHandle,
    Settings,
    live_sessions,
)
from pydantic_ai_stream._edges.cli_output import PlainAnswer, follow
from pydantic_ai_stream._store.postgres import postgres_pool
from pydantic_ai_stream.client import StreamClient, Transcript
from pydantic_ai_stream.server import ServerSettings, Worker, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import server_keys, turn

FULL_TEXT = "".join(f"t{i} " for i in range(PACED_TOKENS))


@pytest.fixture
def settings() -> Settings:
    """Short leases: a worker that stops showing is taken over in about three seconds. Not shorter: a busy
    machine stalls a live worker's loop for over half a second, and a lease lost so resumes the run again."""
    import uuid

    return Settings(redis_prefix=f"t{uuid.uuid4().hex[:12]}", lease_ttl=1.5, lease_renew_interval=0.1)


AGENT = ("--agent", "paced=grpc_agents:paced", "--no-demo", "--grace", "0.2")
SHORT_LEASES = {"PYDANTIC_AI_STREAM_LEASE_TTL": "1.5", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1"}


async def _until_text(entries: AsyncIterator[Entry | None], text: str) -> list[Entry]:
    seen = []
    async for entry in entries:
        if entry is not None:
            seen.append(entry)
            if text in (entry.body.get("content"), entry.body.get("content_delta")):
                return seen
    raise AssertionError(f"the stream ended before {text!r}")


def _text(entries: list[Entry]) -> str:
    return "".join(str(e.body.get("content", "")) + str(e.body.get("content_delta", "")) for e in entries)


async def _check_resumed_once(runtime: Runtime, entries: list[Entry]) -> None:
    markers = [i for i, e in enumerate(entries) if e.body.get("event") == "resumed"]
    assert len(markers) == 1, [e.body for e in entries]
    marker = entries[markers[0]]
    assert (marker.type, marker.origin, marker.body) == (
        "event",
        "pydantic-ai-stream",
        {"idx": 0, "event": "resumed", "attempt": 2},
    )
    assert [e.type for e in entries if e.type != "event"] == ["begin", "end"]
    assert _text(entries[markers[0] + 1 :]) == FULL_TEXT, "the resumed attempt redoes the interrupted node whole"
    session = RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    assert [type(m) for m in session.msgs] == [ModelRequest, ModelResponse], "the run's work is kept once"
    [part] = session.msgs[1].parts
    assert isinstance(part, TextPart)
    assert part.content == FULL_TEXT


@pytest.mark.parametrize("fault", ["kill", "pause", "deploy"])
async def test_a_run_whose_worker_dies_or_stalls_mid_answer_is_resumed_by_another(
    redis: Redis, redis_url: str, settings: Settings, fault: str
) -> None:
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        with worker_process(redis_url, settings.redis_prefix, *AGENT, env=SHORT_LEASES) as first:
            await handle.submit(agent="paced", body={"user_prompt": "go"})
            listening = handle.listen_entries(timeout=30)
            seen = await _until_text(listening, "t5 ")
            signals = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "deploy": signal.SIGTERM}
            first.send_signal(signals[fault])
            if fault == "deploy":  # it stops claiming, gives its run 0.2 s, hands it back and exits
                assert await asyncio.to_thread(first.wait, 10) == 0
            async with Worker(runtime=runtime, agents={"paced": paced}):
                seen += [entry async for entry in listening if entry is not None]
                if fault == "pause":
                    first.send_signal(signal.SIGCONT)  # it comes back, finds its lease gone, writes nothing
                    await asyncio.wait_for(asyncio.to_thread(_logged, first, "lost its lease"), 10)
        entries = await runtime.stream(handle.keys).read_range(after="0-0", count=10_000)
        assert [e.id for e in seen] == [e.id for e in entries], "the listener got the stream as it is"
        await _check_resumed_once(runtime, entries)


@pytest.mark.parametrize("fault", ["kill", "deploy"])
async def test_a_run_whose_step_outlasts_the_queue_wait_is_still_resumed(
    redis: Redis, redis_url: str, settings: Settings, fault: str
) -> None:
    """One step (a model answer of about four seconds) lasts longer than `queue_wait` (2 s); its worker dies or
    is deployed away after that: the run's record lived as long as the run, so another worker resumes it
    (not `run lost`)."""
    settings.queue_wait = 2
    env = {**SHORT_LEASES, "PYDANTIC_AI_STREAM_QUEUE_WAIT": "2", "TEST_PACE_SECONDS": "0.1"}
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        with worker_process(redis_url, settings.redis_prefix, *AGENT, env=env) as first:
            await handle.submit(agent="paced", body={"user_prompt": "go"})
            listening = handle.listen_entries(timeout=30)
            seen = await _until_text(listening, "t25 ")  # 2.5 s into the step at the least: past the queue wait
            first.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
            if fault == "deploy":
                assert await asyncio.to_thread(first.wait, 10) == 0
            async with Worker(runtime=runtime, agents={"paced": paced}):
                seen += [entry async for entry in listening if entry is not None]
        entries = await runtime.stream(handle.keys).read_range(after="0-0", count=10_000)
        assert [e.id for e in seen] == [e.id for e in entries]
        await _check_resumed_once(runtime, entries)


async def test_a_run_stays_listed_through_its_takeover(redis: Redis, redis_url: str, settings: Settings) -> None:
    """Its worker is killed -9 mid-answer: every listing, before, during and after another worker takes the
    run over, shows the session (running, queued again while no worker holds it, then running as attempt 2)
    until the run's `end`."""
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        with worker_process(redis_url, settings.redis_prefix, *AGENT, env=SHORT_LEASES) as first:
            submitted = await handle.submit(agent="paced", body={"user_prompt": "go"})
            listening = handle.listen_entries(timeout=30)
            await _until_text(listening, "t5 ")
            first.kill()
            seen: list[tuple[bool, bool, int]] = []
            async with Worker(runtime=runtime, agents={"paced": paced}):
                ending = asyncio.create_task(_until(listening, lambda e: e.type == "end"))
                while not ending.done():
                    listed = await live_sessions(runtime, scope_id=1, user_id=1)
                    if not listed:
                        bounds = await handle.stream.bounds()
                        assert bounds is not None
                        assert bounds.newest_type == "end", f"unlisted mid-run after {len(seen)} listings"
                        break
                    [run] = listed
                    assert (run.session_id, run.run_id) == ("s1", submitted.run_id)
                    seen.append((run.queued, run.resuming, run.attempt))
                    await asyncio.sleep(0.002)  # the listing's pace: a client polling
                await ending
        assert seen[0] == (False, False, 1), "running as its first attempt"
        assert seen[-1] == (False, False, 2), "then running as its second"
        assert set(seen) <= {(False, False, 1), (True, True, 1), (False, False, 2)}
        assert await live_sessions(runtime, scope_id=1, user_id=1) == []


def _logged(proc: subprocess.Popen[str], text: str) -> None:
    """Read the process's log until a line says `text`."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            return
    raise AssertionError(f"the process ended without logging {text!r}")


STEPS = ("--agent", "steps=grpc_agents:steps", "--no-demo", "--grace", "0.2")


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the `steps` agent's tools count their calls, in this process and in the worker processes."""
    monkeypatch.setenv("TEST_TOOL_MARKS", str(tmp_path))
    return tmp_path


@pytest.fixture(params=["redis", "cluster"])
def target(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """A plain Redis or the 3-master Redis Cluster: its URL, and whether it is the cluster."""
    cluster = request.param == "cluster"
    return request.getfixturevalue("cluster_url" if cluster else "redis_url"), cluster


async def _until(entries: AsyncIterator[Entry | None], done: Callable[[Entry], bool]) -> list[Entry]:
    seen = []
    async for entry in entries:
        if entry is not None:
            seen.append(entry)
            if done(entry):
                return seen
    raise AssertionError("the stream ended first")


async def _file(path: Path, timeout: float = 10.0) -> None:
    """Wait until `path` exists (a tool in another process got there)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        await asyncio.sleep(0.01)  # polling a file: what another process does shows only there


async def _steps_killed(
    target: tuple[str, bool],
    settings: Settings,
    marks: Path,
    until: Callable[[AsyncIterator[Entry | None]], Any],
    capsys: pytest.CaptureFixture[str],
) -> tuple[list[Entry], list[dict[str, Any]], list[Any]]:
    """Run `steps` (started through an API replica) on a worker process, kill -9 it once `until` returns,
    let an in-process worker resume the run. A gRPC listener on the API replica folds the run into a
    `Transcript`, and the CLI's `run` prints it: each shows the whole answer once. Returns the stream
    (checked: what a listener got), the bodies from the marker on, and the stored conversation."""
    url, cluster = target
    redis = await RedisCluster.from_url(url).initialize() if cluster else Redis.from_url(url)
    options = ("--redis-cluster",) if cluster else ()
    config = ServerSettings(
        redis_url=url, redis_cluster=cluster, port=0, concurrency=0, agents={"steps": "grpc_agents:steps"}, demo=False
    )  # the API, no worker
    async with (
        redis,
        Runtime(redis=redis, settings=settings) as runtime,
        running_server(config, settings=settings) as api,
        StreamClient(f"127.0.0.1:{api.port}") as client,
    ):
        handle = SessionHandle(runtime=runtime, keys=server_keys(api, "s1"))
        env = {**SHORT_LEASES, "TEST_TOOL_MARKS": str(marks)}
        with worker_process(url, settings.redis_prefix, *STEPS, *options, env=env) as first:
            await client.run("steps", "s1", "go")
            transcript = Transcript()
            folding = asyncio.create_task(_fold(client.listen("s1"), transcript))
            printing = asyncio.create_task(follow(client.listen("s1"), PlainAnswer()))
            listening = handle.listen_entries(timeout=30)
            seen = await until(listening)
            first.kill()
            async with Worker(runtime=runtime, agents={"steps": steps}):
                seen += [entry async for entry in listening if entry is not None]
                dropped = await folding
                assert await printing == 0
        entries = await runtime.stream(handle.keys).read_range(after="0-0", count=10_000)
        assert [e.id for e in seen] == [e.id for e in entries], "the listener got the stream as it is"
        assert [e.type for e in entries if e.type != "event"] == ["begin", "end"]
        [marker] = [i for i, e in enumerate(entries) if e.body.get("event") == "resumed"]
        assert (entries[marker].origin, entries[marker].body["attempt"]) == ("pydantic-ai-stream", 2)
        assert (transcript.text(), transcript.attempt, transcript.ended, dropped) == (
            STEPS_TEXT + FULL_TEXT, 2, True, 1,
        ), "the gRPC listener shows the answer once"  # fmt: skip
        out, err = capsys.readouterr()
        assert out == STEPS_TEXT + FULL_TEXT + "\n", "the CLI prints the answer once (stdout is not a terminal)"
        assert "[resumed] its worker stopped; attempt 2 goes on\n" in err
        after = [e.body for e in entries[marker:] if e.type == "event"]
        session = RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        return entries, after, session.msgs


async def _fold(events: AsyncIterator[pb.Event], transcript: Transcript) -> int:
    """Fold the events into `transcript`; how many of them dropped output (resumes)."""
    return sum([transcript.apply(event) async for event in events])


def _conversation(msgs: list[Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The stored conversation as (message kind, [(part kind, what it says)])."""

    def said(part: Any) -> Any:
        if isinstance(part, ToolCallPart):
            return part.tool_name
        if isinstance(part, ToolReturnPart):
            return (part.tool_name, part.content)
        return getattr(part, "content", None)

    return [(m.kind, [(p.part_kind, said(p)) for p in m.parts]) for m in msgs]


async def test_a_run_killed_mid_tool_call_redoes_the_node_from_its_response_and_reruns_only_safe_tools(
    target: tuple[str, bool], settings: Settings, marks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (marks / "hang-lookup").touch()

    async def in_lookup(listening: AsyncIterator[Entry | None]) -> list[Entry]:
        seen = await _until(listening, lambda e: e.body.get("event") == "llm-end")
        await _file(marks / "lookup.1")  # the first worker is inside the tool
        return seen

    entries, after, msgs = await _steps_killed(target, settings, marks, in_lookup, capsys)
    assert after[0] == {"idx": 0, "event": "resumed", "attempt": 2}, "node 0 is redone: its tools were running"
    # Node 0 is re-sent from its checkpointed response, complete, then its tools' returns, then node 1.
    assert [(b["event"], b["idx"], b.get("part_kind")) for b in after[1:5]] == [
        ("llm-begin", 0, None),
        ("part_start", 0, "text"),
        ("part_start", 0, "tool-call"),
        ("part_start", 0, "tool-call"),
    ]
    assert after[2]["content"] == STEPS_TEXT
    returns = {b["tool_name"]: b["content"] for b in after if b.get("part_kind") == "tool-return"}
    assert returns == {"book": UNKNOWN_OUTCOME, "lookup": "menu: soup"}, "only the tool safe to retry ran again"
    assert tool_calls("lookup") == 2
    assert _text([e for e in entries if e.body.get("idx") == 1]) == FULL_TEXT
    assert _conversation(msgs) == [
        ("request", [("user-prompt", "go")]),
        ("response", [("text", STEPS_TEXT), ("tool-call", "book"), ("tool-call", "lookup")]),
        ("request", [("tool-return", ("book", UNKNOWN_OUTCOME)), ("tool-return", ("lookup", "menu: soup"))]),
        ("response", [("text", FULL_TEXT)]),
    ], "every finished step once"


async def test_a_run_killed_mid_answer_after_its_tools_redoes_only_that_node(
    target: tuple[str, bool], settings: Settings, marks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def mid_answer(listening: AsyncIterator[Entry | None]) -> list[Entry]:
        return await _until(listening, lambda e: e.body.get("content_delta") == "t5 ")

    entries, after, msgs = await _steps_killed(target, settings, marks, mid_answer, capsys)
    assert after[0] == {"idx": 1, "event": "resumed", "attempt": 2}, "resumed from node 1's request"
    assert {b["idx"] for b in after} == {1}, "node 0 is not redone"
    assert (tool_calls("book"), tool_calls("lookup")) == (1, 1), "no tool ran again"
    marker = next(i for i, e in enumerate(entries) if e.body.get("event") == "resumed")
    assert _text(entries[marker:]) == FULL_TEXT
    assert _conversation(msgs) == [
        ("request", [("user-prompt", "go")]),
        ("response", [("text", STEPS_TEXT), ("tool-call", "book"), ("tool-call", "lookup")]),
        ("request", [("tool-return", ("book", "booked a table")), ("tool-return", ("lookup", "menu: soup"))]),
        ("response", [("text", FULL_TEXT)]),
    ], "every finished step once"


async def test_a_redis_stall_longer_than_the_lease_mid_run_loses_no_run(
    redis_server: RedisServer, settings: Settings
) -> None:
    """`DEBUG SLEEP 5` freezes Redis mid-answer, over three times the lease: the run completes (continued, or resumed
    by the same worker once it sees the lease gone) with one `begin`, one `end`, its answer whole and kept."""
    async with (
        Redis.from_url(redis_server.url) as redis,
        Redis.from_url(redis_server.url, socket_timeout=30) as admin,
        Runtime(redis=redis, settings=settings) as runtime,
        Worker(runtime=runtime, agents={"paced": paced}),
    ):
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        await handle.submit(agent="paced", body={"user_prompt": "go"})
        listening = handle.listen_entries(timeout=30)
        seen = await _until_text(listening, "t5 ")
        await admin.execute_command("DEBUG", "SLEEP", 5)
        seen += [entry async for entry in listening if entry is not None]
        entries = await runtime.stream(handle.keys).read_range(after="0-0", count=10_000)
        assert [e.id for e in seen] == [e.id for e in entries]
        assert [e.type for e in entries if e.type != "event"] == ["begin", "end"], [e.body for e in entries]
        markers = [i for i, e in enumerate(entries) if e.body.get("event") == "resumed"]
        assert _text(entries[markers[-1] + 1 if markers else 0 :]) == FULL_TEXT
        session = RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        assert [type(m) for m in session.msgs] == [ModelRequest, ModelResponse]


def _visible_text(entries: list[Entry]) -> str:
    """The run's text as a client shows it: what a `resumed` marker supersedes (its node and after) dropped."""
    kept: list[Entry] = []
    for entry in entries:
        if entry.body.get("event") == "resumed":
            kept = [e for e in kept if e.body.get("idx", -1) < entry.body["idx"]]
        else:
            kept.append(entry)
    return _text([e for e in kept if e.body.get("part_kind") == "text"])


async def test_a_rolling_restart_of_three_replicas_under_thirty_runs_loses_none(
    redis: Redis, redis_url: str, settings: Settings, marks: Path
) -> None:
    """Three `serve` replicas (API and workers) run 30 runs; each replica in turn gets SIGTERM (0.2 s grace,
    then its runs are handed back) and is replaced. Every run ends once, whole, its conversation kept once.

    The runs hold before their answers until the first replica has handed its ten back (however slow the
    machine, they are all in flight then); the later restarts meet them mid-answer."""
    env = {**SHORT_LEASES, "TEST_TOOL_MARKS": str(marks), "TEST_PACE_SECONDS": "0.15"}
    options = (*STEPS, "--concurrency", "10")
    sessions = [f"s{i}" for i in range(30)]
    (marks / "hold-answer").touch()
    with contextlib.ExitStack() as stack:

        def replica() -> tuple[subprocess.Popen[str], int]:
            return stack.enter_context(serve_process(redis_url, settings.redis_prefix, *options, env=env))

        # Started together, each awaited in a thread: their start-ups overlap and the test's loop runs meanwhile.
        # Every start is waited for (one failing), so that none enters the stack once it has closed.
        started = await asyncio.gather(*(asyncio.to_thread(replica) for _ in range(3)), return_exceptions=True)
        if failed := [e for e in started if isinstance(e, BaseException)]:
            raise failed[0]
        replicas = [r for r in started if not isinstance(r, BaseException)]
        for i, session_id in enumerate(sessions):
            async with StreamClient(f"127.0.0.1:{replicas[i % 3][1]}") as client:
                await client.run("steps", session_id, "go")
        async with Runtime(redis=redis, settings=settings) as runtime:
            handles = [SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=s) for s in sessions]
            await _until_running(runtime, len(sessions))  # ten on each replica
            for i, (proc, _) in enumerate(replicas):
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 10) == 0
                replicas[i] = await asyncio.to_thread(replica)
                (marks / "hold-answer").unlink(missing_ok=True)
            ended = await asyncio.gather(*(_ended(handle) for handle in handles))
            resumed = 0
            for handle, entries in zip(handles, ended, strict=True):
                assert [e.type for e in entries if e.type != "event"] == ["begin", "end"], handle.keys.session_id
                resumed += sum(e.body.get("event") == "resumed" for e in entries)
                assert _visible_text(entries) == STEPS_TEXT + FULL_TEXT
                session = RedisSession(
                    redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id=handle.keys.session_id
                )
                await session.load()
                assert [m.kind for m in session.msgs] == ["request", "response", "request", "response"]
                assert _conversation(session.msgs)[-1] == ("response", [("text", FULL_TEXT)])
            assert resumed >= 10, "the replicas' runs were handed back and resumed, not waited for"


async def _until_running(runtime: Runtime, n: int, timeout: float = 30.0) -> None:
    """Wait until `n` runs of user 1 are running (none queued); fail if one is lost meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        active = await live_sessions(runtime, scope_id=1, user_id=1)
        assert len(active) == n, f"{len(active)} of {n} in flight"
        if not any(run.queued for run in active):
            return
        assert time.monotonic() < deadline, f"{sum(run.queued for run in active)} of {n} still queued"
        await asyncio.sleep(0.05)  # polling Redis: the replicas' claims show only there


async def _ended(handle: SessionHandle) -> list[Entry]:
    """The session's run's entries, once it ended."""
    return [entry async for entry in handle.listen_entries(timeout=60, wait=10) if entry is not None]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_runs_survive_a_worker_killed_at_a_random_moment(
    redis: Redis, redis_url: str, settings: Settings, marks: Path, seed: int
) -> None:
    """Seeded: 6 `steps` runs shared by a worker process and an in-process worker; the process is killed
    -9 at a random moment (mid-token, mid-checkpoint, mid-tool: wherever it falls). Every run ends once,
    shows its whole answer once, and keeps every finished step once; a tool not safe to retry never runs
    twice."""
    rng = random.Random(seed)
    env = {**SHORT_LEASES, "TEST_TOOL_MARKS": str(marks), "TEST_PACE_SECONDS": "0.02", "TEST_TOOL_SECONDS": "0.3"}
    sessions = [f"s{i}" for i in range(6)]
    async with Runtime(redis=redis, settings=settings) as runtime:
        handles = [SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=s) for s in sessions]
        with worker_process(redis_url, settings.redis_prefix, *STEPS, env=env) as victim:
            async with Worker(runtime=runtime, agents={"steps": steps}, concurrency=3):
                for handle in handles:
                    await handle.submit(agent="steps", body={"user_prompt": "go"})
                await asyncio.sleep(rng.uniform(0.05, 1.2))  # the fault's random moment, not synchronisation
                victim.kill()
                ended = await asyncio.gather(*(_ended(handle) for handle in handles))
        for handle, entries in zip(handles, ended, strict=True):
            assert [e.type for e in entries if e.type != "event"] == ["begin", "end"], handle.keys.session_id
            markers = [e.body for e in entries if e.body.get("event") == "resumed"]
            assert [m["attempt"] for m in markers] in ([], [2])
            assert _visible_text(entries) == STEPS_TEXT + FULL_TEXT
            session = RedisSession(
                redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id=handle.keys.session_id
            )
            await session.load()
            conversation = _conversation(session.msgs)
            assert [kind for kind, _ in conversation] == ["request", "response", "request", "response"]
            returns = dict(what for _, what in conversation[2][1])
            assert returns["lookup"] == "menu: soup"
            assert returns["book"] in ("booked a table", UNKNOWN_OUTCOME)
            assert conversation[3] == ("response", [("text", FULL_TEXT)])
    assert tool_calls("book") <= len(sessions), "a tool not safe to retry never ran twice for a run"


async def test_a_run_killed_mid_answer_resumes_with_its_session_history_from_postgresql(
    redis: Redis, redis_url: str, settings: Settings, marks: Path, postgres_url: str, postgres_schema: str
) -> None:
    """Sessions in PostgreSQL (`worker --sessions URL`): a worker process is killed -9 mid-answer on a session
    with an earlier turn; the run resumed in this process sends that turn to the model again, and the stored
    conversation holds the earlier turn and every step of the run once. Nothing is kept in Redis's `:msgs`."""
    async with (
        postgres_pool(postgres_url, schema=postgres_schema) as pool,
        Runtime(redis=redis, settings=settings) as runtime,
    ):
        earlier = PostgresSession(pool=pool, schema=postgres_schema, scope_id=1, user_id=1, session_id="s1")
        await earlier.load()
        earlier.add_msgs(turn("earlier question", "earlier answer"))
        await earlier.save()
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        env = {**SHORT_LEASES, "TEST_TOOL_MARKS": str(marks), "PYDANTIC_AI_STREAM_SESSIONS_SCHEMA": postgres_schema}
        options = ("--agent", "recalling=grpc_agents:recalling", "--no-demo", "--grace", "0.2")
        with worker_process(redis_url, settings.redis_prefix, *options, "--sessions", postgres_url, env=env) as first:
            await handle.submit(agent="recalling", body={"user_prompt": "go"})
            listening = handle.listen_entries(timeout=30)
            seen = await _until(listening, lambda e: e.body.get("content_delta") == "t5 ")
            first.kill()
            sessions = functools.partial(PostgresSession.of, pool=pool, schema=postgres_schema)
            async with Worker(runtime=runtime, agents={"recalling": recalling}, sessions=sessions):
                seen += [entry async for entry in listening if entry is not None]
        entries = await runtime.stream(handle.keys).read_range(after="0-0", count=10_000)
        assert [e.id for e in seen] == [e.id for e in entries]
        assert [e.type for e in entries if e.type != "event"] == ["begin", "end"]
        [marker] = [e.body for e in entries if e.body.get("event") == "resumed"]
        assert marker == {"idx": 1, "event": "resumed", "attempt": 2}, "resumed from node 1's request"

        inputs = model_inputs()
        resumed = [i["said"] for i in inputs if i["pid"] == os.getpid()]
        assert [i["pid"] for i in inputs[:2]] == [first.pid] * 2, "the killed worker sent nodes 0 and 1"
        assert len(resumed) == 1, "the resumed attempt redoes node 1 only"
        assert resumed[0][:3] == ["earlier question", "earlier answer", "go"], "the earlier turn is in its input"
        assert resumed[0] == inputs[1]["said"], "it sends what the killed attempt sent"

        stored = PostgresSession(pool=pool, schema=postgres_schema, scope_id=1, user_id=1, session_id="s1")
        await stored.load()
        assert _conversation(stored.msgs) == [
            ("request", [("user-prompt", "earlier question")]),
            ("response", [("text", "earlier answer")]),
            ("request", [("user-prompt", "go")]),
            ("response", [("text", STEPS_TEXT), ("tool-call", "book"), ("tool-call", "lookup")]),
            ("request", [("tool-return", ("book", "booked a table")), ("tool-return", ("lookup", "menu: soup"))]),
            ("response", [("text", FULL_TEXT)]),
        ], "the earlier turn and every step of the run, once"
        assert (tool_calls("book"), tool_calls("lookup")) == (1, 1), "no tool ran again"
        assert not await redis.exists(handle.keys.msgs), "the conversation is not in Redis"


def _id(entry: Entry) -> tuple[int, int]:
    """A stream entry id as Redis orders it (its clock in ms, then a sequence): comparable across sessions."""
    ms, seq = entry.id.split("-")
    return int(ms), int(seq)


async def test_runs_of_a_killed_worker_resume_before_the_backlog_of_new_runs(
    redis: Redis, redis_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process running 2 runs is killed -9 while 12 new runs are queued and the other worker is
    busy with them: its runs resume at that worker's next free slots, before the backlog (they waited for
    all 12 before)."""
    monkeypatch.setenv("TEST_PACE_SECONDS", "0.02")  # this process's runs: ~0.8 s each
    cut, backlog = ["cut0", "cut1"], [f"q{i}" for i in range(12)]
    async with Runtime(redis=redis, settings=settings) as runtime:
        handles = {s: SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=s) for s in cut + backlog}
        with worker_process(redis_url, settings.redis_prefix, *AGENT, "--concurrency", "2", env=SHORT_LEASES) as victim:
            for session_id in cut:
                await handles[session_id].submit(agent="paced", body={"user_prompt": "go"})
            for session_id in cut:
                await _until_text(handles[session_id].listen_entries(timeout=10), "t0 ")
            for session_id in backlog:  # the victim is full: they wait
                await handles[session_id].submit(agent="paced", body={"user_prompt": "go"})
            async with Worker(runtime=runtime, agents={"paced": paced}, concurrency=2):
                victim.kill()
                ended = {s: await _ended(handle) for s, handle in handles.items()}
    resumed_at = max(_id(e) for s in cut for e in ended[s] if e.body.get("event") == "resumed")
    started = [s for s in backlog if _id(ended[s][1]) < resumed_at]  # its first entry after `begin`
    assert len(started) <= 6, f"{len(started)} of {len(backlog)} new runs started before the cut ones resumed"
    for session_id in cut:
        assert [e.body.get("attempt") for e in ended[session_id] if e.body.get("event") == "resumed"] == [2]
    for entries in ended.values():
        assert [e.type for e in entries if e.type != "event"] == ["begin", "end"]
        assert _text(entries).endswith(FULL_TEXT)


@pytest.mark.parametrize("then", ["cancel", "interrupt"])
async def test_a_run_whose_worker_was_killed_then_cancelled_ends_cancelled_and_is_never_resumed(
    redis: Redis, redis_url: str, settings: Settings, then: str
) -> None:
    """kill -9 mid-answer, then a Cancel (or a Run interrupting it) while no process holds the run: the
    worker that takes it over ends it (`error` canceled + `end`) instead of resuming it; an interrupting
    run is accepted in about a lease TTL and runs."""
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.1
    env = {"PYDANTIC_AI_STREAM_LEASE_TTL": "1.0", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1"}
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        with worker_process(redis_url, settings.redis_prefix, *AGENT, env=env) as first:
            await handle.submit(agent="paced", body={"user_prompt": "go"}, run_id="r1")
            listening = handle.listen_entries(timeout=30)
            seen = await _until_text(listening, "t5 ")
            first.kill()
            await asyncio.to_thread(first.wait, 10)
            async with Worker(runtime=runtime, agents={"paced": paced}):
                if then == "cancel":
                    assert await handle.cancel() is True
                    seen += [entry async for entry in listening if entry is not None]
                    assert [(e.type, e.body.get("msg")) for e in seen if e.type != "event"] == [
                        ("begin", None),
                        ("error", "canceled"),
                        ("end", None),
                    ]
                    assert not [e for e in seen if e.body.get("event") == "resumed"], "never resumed"
                else:
                    started = time.monotonic()
                    submitted = await handle.submit(
                        agent="paced", body={"user_prompt": "again"}, run_id="r2", if_busy="interrupt"
                    )
                    took = time.monotonic() - started
                    assert (submitted.run_id, submitted.waiting) == ("r2", False)
                    assert took < 3 * settings.lease_ttl, took
                    events = [e async for e in handle.listen_entries(timeout=30) if e is not None]
                    assert events[0].id == submitted.begin_event_id
                    assert [e.type for e in events if e.type != "event"] == ["begin", "end"]
                assert await live_sessions(runtime, scope_id=1, user_id=1) == []
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
        await session.load()
        prompts = [p.content for m in session.msgs for p in m.parts if p.part_kind == "user-prompt"]
        assert prompts == ([] if then == "cancel" else ["again"]), "r1 never ran on (no checkpoint to keep)"
