"""Durable runs (ours only: the published package has no queue): how soon a run whose worker is killed goes on
in another worker, and what checkpointing a run at every node costs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from redis.asyncio import Redis

from bench import grpc_side
from bench.procs import Proc
from bench.suite import PREFIX, Bench, progress
from bench.table import Row, percentile
from bench.worker import SCOPE_ID, USER_ID, BenchDeps, Pace, redis_commands, token_text, token_times
from pydantic_ai_stream import Entry, RedisSession, Runtime, SessionHandle, Settings, run
from pydantic_ai_stream._durable.queue import GROUP
from pydantic_ai_stream._write.live import LiveRun
from pydantic_ai_stream.server import Worker

STEP_TIMEOUT = 60.0
"""Longest wait for any one step (a token, a takeover, a run's end)."""


# 1. Crash recovery


@dataclass(frozen=True)
class _Leases:
    """The workers' lease settings: the defaults, or others set through `PYDANTIC_AI_STREAM_*`."""

    ttl: float
    renew_interval: float
    default: bool = False

    @property
    def label(self) -> str:
        kind = "default" if self.default else "short"
        return f"{kind} leases (TTL {self.ttl:g} s, renewed every {self.renew_interval:g} s)"

    def env(self) -> dict[str, str]:
        if self.default:
            return {}
        return {
            "PYDANTIC_AI_STREAM_LEASE_TTL": f"{self.ttl:g}",
            "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": f"{self.renew_interval:g}",
        }


LEASES = (_Leases(ttl=3.0, renew_interval=1.0, default=True), _Leases(ttl=1.0, renew_interval=0.3))
"""One series of kills each."""
RECOVERY_INTERVAL = 0.02
"""Seconds between the paced model's tokens (50/s)."""
RESUMED_TOKENS = 5
"""Tokens the resumed attempt streams before its run ends (its stop file exists by then)."""
PHASE_SEED = 1
"""Seed of the random waits that put the kills and the standbys' checks at random phases (see `_kills`)."""


@dataclass
class _Killed:
    """What the bench saw of a kill: when it sent SIGKILL, and what it read right after it."""

    at_ns: int
    """`time.monotonic_ns()` right after sending SIGKILL."""
    lease_left_ms: int
    """What was left of the victim's lease (`PTTL` of the live flag)."""
    job_idle_ms: int
    """How long since the victim last showed the queue it works on the job (its idle time)."""
    deliveries: int = 0
    """Times the job was handed to a worker, read once the run has resumed: 1 claim + 1 takeover, or more
    when a takeover found the run's lease still held (the job goes idle before the lease lapses when
    the victim last showed its job before it last renewed its lease) and left the job for a later one."""


@dataclass(frozen=True)
class _Kill:
    """One kill, timed from the moment the bench sent SIGKILL."""

    lease_left_ms: float
    takeable_ms: float
    """Kill -> the run may be taken over: its lease lapsed and its job idle for a lease TTL."""
    resumed_ms: float
    """Kill -> the `resumed` marker at the listener."""
    token_ms: float
    """Kill -> the first text token after the marker at the listener."""
    yielded_ms: float
    """Kill -> the resumed model yielding that token (the token is its time)."""
    retaken: bool
    """A takeover found the lease still held before the one that resumed the run."""
    whole: bool
    """The stream has one `begin`, one `resumed`, one `end` and no `error`."""


def _is_marker(entry: Entry) -> bool:
    return entry.type == "event" and entry.body.get("event") == "resumed"


@dataclass(eq=False)
class _Watch:
    """A library listener (`SessionHandle.listen_entries`, in the bench process) on one run to its end: each
    entry with the `time.monotonic_ns()` it arrived at, and the moments a kill is timed by."""

    handle: SessionHandle
    seen: list[tuple[int, Entry]] = field(default_factory=list)
    streaming: asyncio.Event = field(default_factory=asyncio.Event)
    """A text token arrived."""
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    """A text token arrived after the `resumed` marker."""
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        resumed = False
        async for entry in self.handle.listen_entries(wait=STEP_TIMEOUT, timeout=STEP_TIMEOUT):
            arrived = time.monotonic_ns()
            if entry is None:
                continue
            self.seen.append((arrived, entry))
            resumed = resumed or _is_marker(entry)
            if token_text(entry.as_dict()):
                (self.answered if resumed else self.streaming).set()

    async def until(self, event: asyncio.Event, what: str) -> None:
        """Wait for `event`; fail if the run ends first or after `STEP_TIMEOUT`."""
        assert self.task is not None
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, self.task}, timeout=STEP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not event.is_set():
            if self.task.done():
                self.task.result()  # raises its error
            raise RuntimeError(f"session {self.handle.keys.session_id}: no {what} within {STEP_TIMEOUT:g} s")

    def timed(self, killed: _Killed, ttl: float, whole: bool) -> _Kill:
        """The kill's times, from what the listener saw (it saw the token after the marker)."""
        marker_ns = next(arrived for arrived, entry in self.seen if _is_marker(entry))
        arrived, token = next(
            (arrived, text)
            for arrived, entry in self.seen
            if arrived >= marker_ns and not _is_marker(entry) and (text := token_text(entry.as_dict()))
        )
        return _Kill(
            lease_left_ms=killed.lease_left_ms,
            takeable_ms=max(killed.lease_left_ms, ttl * 1000 - killed.job_idle_ms),
            resumed_ms=(marker_ns - killed.at_ns) / 1e6,
            token_ms=(arrived - killed.at_ns) / 1e6,
            yielded_ms=(token_times(token)[0][1] - killed.at_ns) / 1e6,
            retaken=killed.deliveries > 2,
            whole=whole,
        )

    async def ended(self) -> bool:
        """Wait for the run's end: whether its stream has one `begin`, one `resumed`, one `end`, no `error`."""
        assert self.task is not None
        async with asyncio.timeout(STEP_TIMEOUT):
            await self.task
        kinds = [("resumed" if _is_marker(entry) else entry.type) for _, entry in self.seen]
        counts = {kind: kinds.count(kind) for kind in ("begin", "resumed", "end", "error")}
        return counts == {"begin": 1, "resumed": 1, "end": 1, "error": 0} and kinds[-1] == "end"


async def recovery(bench: Bench) -> list[Row]:
    """Kill -9 the worker executing a run, one kill at a time; time the `resumed` marker and the resumed
    run's next token at a listener. Once with the default leases, once with short ones."""
    rows = []
    for leases in LEASES:
        await bench.redis.reset()
        progress(f"recovery: ours, {bench.sizes.recovery_kills} kills, {leases.label}")
        rows += _recovery_rows(leases, await _kills(bench, leases))
    return rows


async def _kills(bench: Bench, leases: _Leases) -> list[_Kill]:
    """The kills, one at a time, each of the only worker that can have claimed the run.

    The workers execute one run at a time (`--concurrency 1`). Each kill: the victim is the only worker
    when the run is submitted, so it claims it; once it streams, a standby worker is started and warmed
    up by a run of its own (the busy victim cannot claim it); then the victim is killed and the standby
    takes the run over. Once that run has ended, the standby is the only worker: the next victim.

    Phases: a worker shows the queue its jobs are worked on, and checks for jobs to take over, every
    renewal interval from its start; it renews a run's lease every interval from its adoption of the run.
    How long a takeover waits depends on the phases between these timers and the kill. Done back to back,
    the bench would fix them (a worker starts in about the same ~1 s each time: every takeover then
    waited ~0.9 s for the standby's next check); in a deployment they are unrelated. So the run is
    submitted, the standby started and the victim killed each after a random part of an interval (seeded).
    """
    workers: list[Proc] = []
    watches: list[_Watch] = []
    kills: list[_Killed] = []
    settings = leases.env()
    phases = random.Random(PHASE_SEED)
    async with Runtime(redis=bench.redis.client, settings=Settings(redis_prefix=PREFIX)) as runtime:
        try:
            with tempfile.TemporaryDirectory(prefix="bench-recovery-") as stops:
                victim = await _warm_worker(bench, runtime, workers, settings, "warm-up-0")
                for k in range(bench.sizes.recovery_kills):
                    watch = _Watch(SessionHandle.of(runtime, scope_id=SCOPE_ID, user_id=USER_ID, session_id=f"k{k}"))
                    watches.append(watch)
                    watch.start()
                    stop = Path(stops) / f"k{k}"
                    pace = Pace(tokens=RESUMED_TOKENS, interval=RECOVERY_INTERVAL, stop_file=str(stop))
                    await asyncio.sleep(phases.uniform(0, leases.renew_interval))  # a phase, see above
                    submitted = await watch.handle.submit(agent=grpc_side.AGENT, body={"user_prompt": pace.prompt()})
                    await watch.until(watch.streaming, "first token")
                    await asyncio.sleep(phases.uniform(0, leases.renew_interval))  # a phase, see above
                    standby = await _warm_worker(bench, runtime, workers, settings, f"warm-up-{k + 1}")
                    job_id = await _held_by(runtime, submitted.run_id, victim)
                    await asyncio.sleep(phases.uniform(0, leases.renew_interval))  # a phase, see above
                    victim.kill()
                    killed = await _killed(runtime, watch.handle, job_id, time.monotonic_ns())
                    kills.append(killed)
                    stop.touch()  # the victim is dead: the resumed attempt ends after a few tokens
                    await watch.until(watch.answered, "token after the resumed marker")
                    # The run goes on for a few tokens more: its job is still there.
                    killed.deliveries = await _deliveries(runtime, job_id)
                    workers.remove(victim)
                    await bench.procs.stop(victim)  # reaps it
                    victim = standby
                return [
                    watch.timed(killed, leases.ttl, await watch.ended())
                    for watch, killed in zip(watches, kills, strict=True)
                ]
        finally:
            await _stop(bench, watches, workers)


async def _stop(bench: Bench, watches: list[_Watch], workers: list[Proc]) -> None:
    """Stop the listeners, then the workers."""
    for watch in watches:
        if watch.task is not None:
            watch.task.cancel()
    await asyncio.gather(*(watch.task for watch in watches if watch.task is not None), return_exceptions=True)
    for worker in workers:
        await bench.procs.stop(worker)


async def _warm_worker(
    bench: Bench, runtime: Runtime, workers: list[Proc], settings: Mapping[str, str], warm_up: str
) -> Proc:
    """Start a `pydantic-ai-stream worker` (one run at a time) and run a short run through the queue to its
    end: the worker that is free claims it, so its first run is not the one measured."""
    name = f"recovery worker {len(workers) + 1}"
    worker = await grpc_side.start_queue_worker(bench, name, concurrency=1, settings=settings)
    workers.append(worker)
    watch = _Watch(SessionHandle.of(runtime, scope_id=SCOPE_ID, user_id=USER_ID, session_id=warm_up))
    watch.start()
    assert watch.task is not None
    await watch.handle.submit(agent=grpc_side.AGENT, body={"user_prompt": Pace(tokens=5).prompt()})
    async with asyncio.timeout(STEP_TIMEOUT):
        await watch.task
    return worker


async def _held_by(runtime: Runtime, run_id: str, victim: Proc) -> str:
    """The id of the job of `run_id`; fails unless the worker `victim` holds it (its name carries its pid)."""
    redis, queue = runtime.redis, runtime.queue
    held: list[dict[str, Any]] = await redis.xpending_range(queue.key, GROUP, min="-", max="+", count=100)
    for pending in held:
        job_id = pending["message_id"]
        jobs: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(queue.key, job_id, job_id)  # type: ignore[assignment]
        if jobs[0][1][b"run_id"].decode() == run_id:
            consumer = pending["consumer"].decode()
            if f"-{victim.pid}-" not in consumer:
                raise RuntimeError(f"run {run_id} is held by {consumer}, not by the victim (pid {victim.pid})")
            return str(job_id.decode())
    raise RuntimeError(f"run {run_id} is held by no worker")


async def _killed(runtime: Runtime, handle: SessionHandle, job_id: str, at_ns: int) -> _Killed:
    """What is left of the run's lease and how long its job has been idle, in one round trip."""
    async with runtime.redis.pipeline(transaction=False) as pipe:
        pipe.pttl(handle.keys.live)
        pipe.xpending_range(runtime.queue.key, GROUP, min=job_id, max=job_id, count=1)
        lease_left, [pending] = await pipe.execute()
    return _Killed(at_ns=at_ns, lease_left_ms=int(lease_left), job_idle_ms=int(pending["time_since_delivered"]))


async def _deliveries(runtime: Runtime, job_id: str) -> int:
    """How many times the job was handed to a worker (claimed, taken over)."""
    held = await runtime.redis.xpending_range(runtime.queue.key, GROUP, min=job_id, max=job_id, count=1)
    if not held:
        raise RuntimeError(f"job {job_id} was done before its delivery count was read")
    return int(held[0]["times_delivered"])


def _recovery_rows(leases: _Leases, kills: list[_Kill]) -> list[Row]:
    n = len(kills)
    label = (f"recovery (ours): {n} x kill -9 of the `pydantic-ai-stream worker` streaming a run, {leases.label}; "
             f"a standby worker takes it over; a library listener")  # fmt: skip
    resumed = [kill.resumed_ms for kill in kills]
    taken = [kill.resumed_ms - kill.takeable_ms for kill in kills]
    token = [kill.token_ms for kill in kills]
    after = [kill.token_ms - kill.resumed_ms for kill in kills]
    return [
        Row(label, "kill -> `resumed` at the listener p50 (ms)", percentile(resumed, 50), decimals=1),
        Row(label, "kill -> `resumed` at the listener p99 (ms)", percentile(resumed, 99), decimals=1),
        Row(label, "of which: lease left at the kill p50 (ms)", percentile([k.lease_left_ms for k in kills], 50)),
        Row(label, "of which: kill -> takeable (lease lapsed, job idle a TTL) p50 (ms)",
            percentile([k.takeable_ms for k in kills], 50)),
        Row(label, "of which: takeable -> `resumed` (next takeover check, adopt) p50 (ms)",
            percentile(taken, 50), decimals=1),
        Row(label, "of which: takeable -> `resumed` p99 (ms)", percentile(taken, 99), decimals=1),
        Row(label, f"takeovers that first found the lease held: the job taken again a TTL later (of {n})",
            sum(kill.retaken for kill in kills)),
        Row(label, "kill -> first token after it p50 (ms)", percentile(token, 50), decimals=1),
        Row(label, "kill -> first token after it p99 (ms)", percentile(token, 99), decimals=1),
        Row(label, "`resumed` -> that token p50 (ms)", percentile(after, 50), decimals=1),
        Row(label, "`resumed` -> that token p99 (ms)", percentile(after, 99), decimals=1),
        Row(label, "model yielded it -> at the listener p50 (ms)",
            percentile([kill.token_ms - kill.yielded_ms for kill in kills], 50), decimals=1),
        Row(label, f"streams with one begin, one resumed, one end, no error (of {n})",
            sum(kill.whole for kill in kills)),
    ]  # fmt: skip


# 2. Checkpoint cost

NODES_AGENT = "nodes"
STEP_TOOL = "step"
RETURNS: tuple[tuple[str, str], ...] = (("2 B", "ok"), ("10 kB", "x" * 10_000))
"""What the tool returns (a label, the return): small, then 10 kB, so the run's messages grow by 10 kB a node."""
FIRST_LAST = 10
"""Checkpoints at either end of a run whose times are compared (the cost per node must not grow)."""


@dataclass(eq=False)
class _Nodes:
    """The checkpoint workload's agent: `requests` model requests, each answered with a call of `step` (which
    returns `returned`) but the last, answered "done"; when each model call of the current run started.

    The answer is one of the requests: pydantic-ai allows a run 50 by default (`UsageLimits`), and the
    limit cannot be raised for a run from the queue (its options are JSON).
    """

    requests: int
    returned: str
    calls: list[float] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    """Its last model call began."""

    def agent(self) -> Agent[None, str]:
        agent = Agent(FunctionModel(stream_function=self._stream))
        returned = self.returned

        @agent.tool_plain(name=STEP_TOOL)
        def step(i: int) -> str:
            return returned

        return agent

    def next_run(self) -> None:
        self.calls.clear()
        self.answered.clear()

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        self.calls.append(time.perf_counter())
        done = sum(isinstance(message, ModelResponse) for message in messages)
        if done < self.tool_nodes:
            yield {0: DeltaToolCall(name=STEP_TOOL, json_args=f'{{"i": {done}}}', tool_call_id=f"step-{done}")}
            return
        self.answered.set()
        yield "done"

    @property
    def tool_nodes(self) -> int:
        """Nodes whose response calls the tool (and is checkpointed)."""
        return self.requests - 1

    def per_node_ms(self) -> float:
        """The last run's wall time per node that calls the tool: from its first model call to its last."""
        return (self.calls[-1] - self.calls[0]) / self.tool_nodes * 1000


@dataclass(eq=False)
class _Probe:
    """Wraps `LiveRun.checkpoint` in this process while `installed`: how long each checkpoint took, per run;
    with `admin`, also the Redis commands each caused (`INFO commandstats` around it) and what the run's
    checkpoint keeps after it (`MEMORY USAGE`, `LLEN`, message bytes; read afterwards, not counted)."""

    admin: Redis | None = None
    runs: list[list[float]] = field(default_factory=list)
    """Per run, each checkpoint's time (ms), in order."""
    commands: int = 0
    kept: tuple[int, int, int] = (0, 0, 0)

    @property
    def checkpoints(self) -> int:
        return sum(len(times) for times in self.runs)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = LiveRun.checkpoint
        probe = self

        async def checkpoint(live: LiveRun, idx: int, messages: Sequence[ModelMessage]) -> None:
            kept, admin = live.kept, probe.admin
            commands = 0 if admin is None else await redis_commands(admin)
            started = time.perf_counter()
            await original(live, idx, messages)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if live.kept == kept:
                return  # nothing kept: the same checkpoint again
            probe.runs[-1].append(elapsed_ms)
            if admin is not None:
                probe.commands += await redis_commands(admin) - commands
                probe.kept = await _kept(admin, live.lease.stream.keys.checkpoint_msgs)

        LiveRun.checkpoint = checkpoint  # type: ignore[method-assign, assignment]
        try:
            yield
        finally:
            LiveRun.checkpoint = original  # type: ignore[method-assign]


async def _kept(admin: Redis, key: str) -> tuple[int, int, int]:
    """`MEMORY USAGE` of a checkpoint's message list, its length and its messages' bytes."""
    usage = await admin.memory_usage(key, samples=0)
    messages: list[bytes | str] = await admin.lrange(key, 0, -1)
    return int(usage or 0), len(messages), sum(len(message) for message in messages)


async def checkpoint(bench: Bench) -> list[Row]:
    """Wall time per node of runs through the queue (checkpointed) and of `run()` (not); what a checkpoint
    costs in time, Redis commands and memory; with small tool returns, then 10 kB ones."""
    rows = []
    for size, returned in RETURNS:
        await bench.redis.reset()
        progress(f"checkpoint: ours, {bench.sizes.checkpoint_runs} x 2 runs of {bench.sizes.checkpoint_nodes} nodes, "
                 f"{size} tool returns")  # fmt: skip
        rows += await _checkpoint_rows(bench, size, returned)
    return rows


async def _checkpoint_rows(bench: Bench, size: str, returned: str) -> list[Row]:
    s = bench.sizes
    admin = bench.redis.client
    nodes = _Nodes(s.checkpoint_nodes, returned)
    agent = nodes.agent()
    timing, counting = _Probe(), _Probe(admin=admin)
    wall: dict[str, list[float]] = {"queue": [], "run": []}
    commands = {"queue": 0, "run": 0}
    # No socket timeout: redis-py 8's default (5 s) cuts the worker's blocking claim (up to 5 s) short.
    async with (
        Redis.from_url(bench.redis.url, socket_timeout=None) as client,
        Runtime(redis=client, settings=Settings(redis_prefix=PREFIX)) as runtime,
        Worker(runtime=runtime, agents={NODES_AGENT: agent}, concurrency=1) as worker,
    ):

        async def one(kind: str, session_id: str, probe: _Probe) -> int:
            """Run the agent once, through the queue or with `run()`; the Redis commands meanwhile."""
            nodes.next_run()
            before = await redis_commands(admin)
            async with asyncio.timeout(STEP_TIMEOUT):
                if kind == "queue":
                    probe.runs.append([])
                    handle = SessionHandle.of(runtime, scope_id=SCOPE_ID, user_id=USER_ID, session_id=session_id)
                    await handle.submit(agent=NODES_AGENT, body={"user_prompt": "go"})
                    await nodes.answered.wait()
                    await worker.join()
                else:
                    deps = BenchDeps(redis=client, runtime=runtime, user_id=USER_ID, session_id=session_id)
                    await run(RedisSession.of(deps), agent, "go", deps)
            sent = await redis_commands(admin) - before
            await _check_ended(admin, runtime, session_id)
            return sent

        with timing.installed():
            for kind in wall:
                await one(kind, f"warm-up-{kind}", timing)
            timing.runs.clear()  # the warm-up runs are not measured
            for i in range(s.checkpoint_runs):
                for kind in wall:  # alternating: a drift of the machine hits both
                    commands[kind] += await one(kind, f"{kind}-{i}", timing)
                    wall[kind].append(nodes.per_node_ms())
        with counting.installed():
            await one("queue", "counted", counting)
    return _checkpoint_table(bench, size, wall, commands, timing, counting)


async def _check_ended(admin: Redis, runtime: Runtime, session_id: str) -> None:
    """Fail unless the session's stream ends with `end` and has no `error`."""
    key = runtime.keys(scope_id=SCOPE_ID, user_id=USER_ID, session_id=session_id).stream
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await admin.xrange(key)  # type: ignore[assignment]
    kinds = [fields[b"type"] for _, fields in entries]
    if not kinds or kinds[-1] != b"end" or b"error" in kinds:
        raise RuntimeError(f"{session_id}: the run did not end cleanly: {kinds[-3:]}")


def _checkpoint_table(
    bench: Bench,
    size: str,
    wall: dict[str, list[float]],
    commands: dict[str, int],
    timing: _Probe,
    counting: _Probe,
) -> list[Row]:
    s = bench.sizes
    n, runs = s.checkpoint_nodes - 1, s.checkpoint_runs
    label = (f"checkpoint (ours): {runs} + {runs} runs of {n} nodes (a model response calling a tool that returns "
             f"{size}) and the answer, through the queue (in-process `Worker`) and with `run()`")  # fmt: skip
    queue_ms, run_ms = percentile(wall["queue"], 50), percentile(wall["run"], 50)
    times = [ms for run_times in timing.runs for ms in run_times]
    per_run = timing.checkpoints / len(timing.runs)
    edge = min(FIRST_LAST, int(per_run) // 2)
    first = [ms for run_times in timing.runs for ms in run_times[:edge]]
    last = [ms for run_times in timing.runs for ms in run_times[-edge:]]
    usage, length, payload = counting.kept
    return [
        Row(label, "wall ms / node through the queue (durable), p50 of runs", queue_ms, decimals=2),
        Row(label, "wall ms / node with run() (not durable), p50 of runs", run_ms, decimals=2),
        Row(label, "difference (ms / node)", queue_ms - run_ms, decimals=2),
        Row(label, "checkpoints / run", per_run),
        Row(label, "LiveRun.checkpoint p50 (ms)", percentile(times, 50), decimals=2),
        Row(label, "LiveRun.checkpoint p99 (ms)", percentile(times, 99), decimals=2),
        Row(label, f"LiveRun.checkpoint p50 (ms), a run's first {edge}", percentile(first, 50), decimals=2),
        Row(label, f"LiveRun.checkpoint p50 (ms), a run's last {edge}", percentile(last, 50), decimals=2),
        Row(label, "Redis commands / checkpoint", counting.commands / counting.checkpoints, decimals=1),
        Row(label, "Redis commands / node through the queue", commands["queue"] / (runs * n), decimals=1),
        Row(label, "Redis commands / node with run()", commands["run"] / (runs * n), decimals=1),
        Row(label, "checkpoint messages at the last node: MEMORY USAGE (bytes)", usage),
        Row(label, "checkpoint messages at the last node: LLEN", length),
        Row(label, "checkpoint messages at the last node: message bytes", payload),
    ]


# 3. A backlog: runs cut short, and another tenant's first run

BACKLOG_CONCURRENCY = 16
"""Runs each `pydantic-ai-stream worker` of the backlog workload executes at once (16 held by the victim)."""
BACKLOG_PACE = Pace(tokens=30, interval=0.1)
"""Each backlog run streams for about 3 s, after a random (seeded) wait of up to 3 s, so runs started
together do not end together: a worker's 16 slots free one at a time, ~0.3 s apart. The victim's runs still
stream when it is killed, and the backlog lasts well past the measurements."""
OTHER_SCOPE_ID = SCOPE_ID + 1
"""The second tenant's scope."""


async def backlog(bench: Bench) -> list[Row]:
    """Ours: 2 workers busy on a backlog of one scope. Kill -9 one: time until each of its runs resumed.
    Then a second scope's runs, one at a time, while the first has a backlog queued: time until each starts."""
    sizes = bench.sizes
    await bench.redis.reset()
    progress(f"backlog: ours, kill -9 with {sizes.backlog_runs} queued")
    resumed, queued_at_kill = await _killed_in_backlog(bench, sizes.backlog_runs)
    await bench.redis.reset()
    progress(f"backlog: ours, {sizes.backlog_firsts} first runs of a second scope behind {sizes.backlog_other} queued")
    firsts, queued_left = await _firsts_behind_backlog(bench, sizes.backlog_other, sizes.backlog_firsts)
    kill = (f"backlog (ours): kill -9 of 1 of 2 `pydantic-ai-stream worker --concurrency {BACKLOG_CONCURRENCY}` "
            f"busy on {sizes.backlog_runs} queued runs of one scope (3-6 s), default leases (TTL 3 s)")  # fmt: skip
    first = (f"backlog (ours): a second scope's run, one at a time, while 1 worker (`--concurrency "
             f"{BACKLOG_CONCURRENCY}`) is busy on {sizes.backlog_other} queued runs of the first")  # fmt: skip
    return [
        Row(kill, "runs queued at the kill", queued_at_kill),
        Row(kill, "runs the victim held (all resumed, each once)", len(resumed)),
        Row(kill, "kill -> `resumed` p50 (ms)", percentile(resumed, 50)),
        Row(kill, "kill -> `resumed` p99 (ms)", percentile(resumed, 99)),
        Row(first, "submit -> the run's first entry after `begin` p50 (ms)", percentile(firsts, 50), decimals=1),
        Row(first, "submit -> the run's first entry after `begin` p99 (ms)", percentile(firsts, 99), decimals=1),
        Row(first, "runs of the first scope still queued after the last one", queued_left),
    ]  # fmt: skip


async def _submit_backlog(runtime: Runtime, scope_id: int, runs: int, name: str) -> None:
    """`runs` runs of the paced agent in `scope_id`, submitted 100 at a time."""
    offsets = random.Random(PHASE_SEED)
    prompts = [replace(BACKLOG_PACE, offset=offsets.uniform(0, 3)).prompt() for _ in range(runs)]
    for start in range(0, runs, 100):
        await asyncio.gather(*(
            SessionHandle.of(runtime, scope_id=scope_id, user_id=USER_ID, session_id=f"{name}{i}").submit(
                agent=grpc_side.AGENT, body={"user_prompt": prompts[i]}
            )
            for i in range(start, min(runs, start + 100))
        ))  # fmt: skip


def _backlog_runtime(bench: Bench, runs: int) -> Runtime:
    return Runtime(redis=bench.redis.client, settings=Settings(redis_prefix=PREFIX, max_queued_runs=runs + 100))


async def _killed_in_backlog(bench: Bench, runs: int) -> tuple[list[float], int]:
    """Kill -> the `resumed` marker of each run the killed worker held (ms), and the runs queued at the kill."""
    workers: list[Proc] = []
    watches: list[_Watch] = []
    async with _backlog_runtime(bench, runs) as runtime:
        try:
            for n in range(2):
                workers.append(
                    await grpc_side.start_queue_worker(bench, f"backlog worker {n + 1}", BACKLOG_CONCURRENCY)
                )
            victim = workers[0]
            await _submit_backlog(runtime, SCOPE_ID, runs, "q")
            held = await _held_runs(runtime, victim, BACKLOG_CONCURRENCY)
            for session_id in held:
                watch = _Watch(SessionHandle.of(runtime, scope_id=SCOPE_ID, user_id=USER_ID, session_id=session_id))
                watches.append(watch)
                watch.start()
                await watch.until(watch.streaming, "first token")
            victim.kill()
            killed_ns = time.monotonic_ns()
            queued = await runtime.queue.waiting()
            resumed = []
            for watch in watches:
                await watch.until(watch.answered, "token after the resumed marker")
                marker_ns = next(arrived for arrived, entry in watch.seen if _is_marker(entry))
                resumed.append((marker_ns - killed_ns) / 1e6)
            return resumed, queued
        finally:
            await _stop(bench, watches, workers)


async def _held_runs(runtime: Runtime, victim: Proc, count: int) -> list[str]:
    """The sessions of the `count` runs the worker `victim` holds, once it holds that many."""
    redis, queue = runtime.redis, runtime.queue
    async with asyncio.timeout(STEP_TIMEOUT):
        while True:
            pending: list[dict[str, Any]] = await redis.xpending_range(queue.key, GROUP, min="-", max="+", count=1000)
            ids = [p["message_id"] for p in pending if f"-{victim.pid}-" in p["consumer"].decode()]
            if len(ids) >= count:
                break
            await asyncio.sleep(0.05)  # polling the queue: the workers claim on their own
    sessions = []
    for job_id in ids:
        jobs: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(queue.key, job_id, job_id)  # type: ignore[assignment]
        sessions.append(jobs[0][1][b"session_id"].decode())
    return sessions


async def _firsts_behind_backlog(bench: Bench, runs: int, firsts: int) -> tuple[list[float], int]:
    """Submit -> first entry after `begin` (ms) of the second scope's runs, each after the last one ended."""
    async with _backlog_runtime(bench, runs) as runtime:
        worker = await grpc_side.start_queue_worker(bench, "backlog worker", BACKLOG_CONCURRENCY)
        try:
            await _submit_backlog(runtime, SCOPE_ID, runs, "q")
            latencies = []
            for k in range(firsts):
                handle = SessionHandle.of(runtime, scope_id=OTHER_SCOPE_ID, user_id=USER_ID, session_id=f"other{k}")
                started = time.monotonic_ns()
                await handle.submit(agent=grpc_side.AGENT, body={"user_prompt": Pace(tokens=1).prompt()})
                entries = handle.listen_entries(wait=STEP_TIMEOUT, timeout=STEP_TIMEOUT)
                seen = 0
                async for entry in entries:
                    if entry is None:
                        continue
                    seen += 1
                    if seen == 2:  # the first entry after `begin`: the run started
                        latencies.append((time.monotonic_ns() - started) / 1e6)
                    if entry.type == "end":
                        break
            return latencies, await runtime.queue.depth(SCOPE_ID)
        finally:
            await bench.procs.stop(worker)
