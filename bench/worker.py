"""One benchmark workload against one Redis; prints one JSON object on stdout, progress on stderr.

A standalone script, run by `python -m bench` with either package's interpreter: ours
(`.venv/bin/python bench/worker.py ...`) or the published 0.1.1 (`bench/.venv-published/bin/python ...`).
It uses only the API both share (the seed API): `Deps` (`get_scope_id`, `listen`, `cancel`), `Session`,
`run`, `AgxCanceledError` and `settings.set_redis_prefix`. Known differences: our `listen` yields the
final `end` event (the published one returns on it); the published package notices a cancel only
between model calls (its cancel latency is the rest of the model call). Models stream text only (the
published package crashes on tool-call args that arrive in pieces).

Models are paced on absolute deadlines, as a provider streams whatever its consumer does: token i of a model
call is due `offset + i * interval` seconds after the call began, and each token is `"<due_ns>:<made_ns> "`
(`time.monotonic_ns()` of its due time and of its yield), so a listener in any process on the machine measures
its delivery latency from when the model's pace made it due, and from when it was yielded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from typing import Any, TypeVar

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis

from pydantic_ai_stream import AgxCanceledError, Deps, Session, run, settings

T = TypeVar("T")

READY = "bench-worker: ready"
"""Printed on stderr once a worker that others wait for is set up."""

SCOPE_ID = USER_ID = 1
START_RAMP = 100
"""Runs started at a time, each batch once the previous one's models have begun: a burst of a thousand
run starts blocks one event loop for seconds, long enough for our leases (3 s) to expire."""
POOL_SIZE = 20_000
"""Connections a client may open. redis-py 8's default pool (100, raising when exhausted) is too small for
either package with hundreds of concurrent runs or listeners in one process (each listener of the
published package blocks a connection in `XREAD`)."""


@dataclass
class BenchDeps(Deps):
    def get_scope_id(self) -> int:
        return SCOPE_ID


@dataclass
class NullSession(Session):
    async def load(self) -> None:
        pass

    async def save(self) -> None:
        pass


# The model: its pace comes from the prompt, so the gRPC server can host the same agent (bench/agents.py).


@dataclass(frozen=True)
class Pace:
    """What the model streams: `tokens` text deltas, `interval` seconds apart, then maybe hangs forever.

    `offset`: seconds before the first token (so paced runs that start together do not tick in step).
    `stop_file`: it streams on past `tokens` until that file exists (a run that lasts until its worker
    is killed, and whose resumed attempt then ends after `tokens`).
    """

    tokens: int
    interval: float = 0.0
    stall: bool = False
    offset: float = 0.0
    stop_file: str | None = None

    def prompt(self) -> str:
        return json.dumps(asdict(self))

    def goes_on(self, streamed: int) -> bool:
        """Whether the model streams another token after `streamed`."""
        return streamed < self.tokens or (self.stop_file is not None and not os.path.exists(self.stop_file))


def _pace(messages: Sequence[ModelMessage]) -> Pace:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return Pace(**json.loads(part.content))
    raise ValueError("no prompt")


def paced_model(gate: asyncio.Event | None = None, started: asyncio.Queue[None] | None = None) -> FunctionModel:
    """A model streaming timestamp tokens at the prompt's pace; with `gate`, only once it is set.

    Each model call puts an item on `started` (if given) as it begins. Token i is due `offset + i * interval`
    seconds after the call began (or the gate opened): the model sleeps until then, not at all when that is
    past (a held-back consumer gets the late tokens at once, as from a provider's socket buffer), so a slow
    event loop or consumer does not slow the model's pace.
    """

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        pace = _pace(messages)
        if started is not None:
            started.put_nowait(None)
        if gate is not None:
            await gate.wait()
        first_due = time.monotonic_ns() + round(pace.offset * 1e9)
        streamed = 0
        while pace.goes_on(streamed):
            due = first_due + round(streamed * pace.interval * 1e9)
            if (wait := due - time.monotonic_ns()) > 0:
                await asyncio.sleep(wait / 1e9)  # the model's pacing
            yield f"{due}:{time.monotonic_ns()} "
            streamed += 1
        if pace.stall:
            await asyncio.Event().wait()

    return FunctionModel(stream_function=stream)


# Redis clients and measurements.


@dataclass
class Counts:
    round_trips: int = 0
    commands: int = 0


class CountingRedis(Redis):
    """A client counting what it sends: each command is a round trip; a pipeline is one round trip."""

    counts: Counts

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.counts.round_trips += 1
        self.counts.commands += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def counted(raise_on_error: bool = True) -> Any:
            self.counts.round_trips += 1
            self.counts.commands += len(pipe.command_stack)
            return await execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


MEASUREMENT_COMMANDS = frozenset({"cmdstat_info", "cmdstat_xlen", "cmdstat_memory", "cmdstat_ping"})
"""Commands the benchmark itself sends; not counted as the package's."""


async def redis_commands(admin: Redis) -> int:
    """Commands Redis has executed (including those inside scripts), the benchmark's own left out."""
    stats = await admin.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in MEASUREMENT_COMMANDS)


async def redis_cpu(admin: Redis) -> float:
    """CPU seconds the Redis server has used."""
    cpu = await admin.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def rss_kib() -> int:
    """This process's resident set size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def client(url: str) -> Redis:
    return Redis.from_url(url, max_connections=POOL_SIZE)


def counting_client(url: str) -> CountingRedis:
    redis = CountingRedis.from_url(url, max_connections=POOL_SIZE)
    assert isinstance(redis, CountingRedis)
    redis.counts = Counts()
    return redis


def stream_key(session_id: str) -> str:
    """The documented stream key, `{prefix}:{scope_id}:{user_id}:{session_id}`."""
    return f"{settings.redis_prefix}:{SCOPE_ID}:{USER_ID}:{session_id}"


def deps(redis: Redis, session_id: str) -> BenchDeps:
    return BenchDeps(redis=redis, user_id=USER_ID, session_id=session_id)


def token_text(event: dict[str, Any]) -> str:
    """The text a text part event carries (the first token comes with `part_start`)."""
    body = event["body"]
    if body.get("event") == "part_delta":
        return str(body.get("content_delta", ""))
    if body.get("event") == "part_start" and body.get("part_kind") == "text":
        return str(body.get("content", ""))
    return ""


def token_times(text: str) -> list[tuple[int, int]]:
    """`(due_ns, made_ns)` of each token in a text: when the model's pace made it due, when it was yielded."""
    return [(int(due), int(made)) for due, made in (token.split(":") for token in text.split())]


@dataclass
class Delivery:
    """Each token's delivery latency (ms) where it was received: from its due time (what a user waits compared
    with the model's own pace) and from its yield (what a runtime that holds its model back hides)."""

    from_due: list[float] = field(default_factory=list)
    from_yield: list[float] = field(default_factory=list)

    def add(self, text: str, received_ns: int) -> None:
        for due, made in token_times(text):
            self.from_due.append((received_ns - due) / 1e6)
            self.from_yield.append((received_ns - made) / 1e6)

    def result(self) -> dict[str, list[float]]:
        return {"latencies_ms": self.from_due, "yield_latencies_ms": self.from_yield}


async def listen_tokens(redis: Redis, session_id: str, sink: Delivery, *, wait: int = 60) -> None:
    """Listen to a session until its end, adding each token's delivery latencies to `sink`."""
    async with contextlib.aclosing(deps(redis, session_id).listen(serialize=False, wait=wait)) as events:
        async for event in events:
            now = time.monotonic_ns()
            assert isinstance(event, dict)
            if event["type"] == "end":  # ours yields it; the published one just returns
                return
            sink.add(token_text(event), now)


async def warm_up(redis: Redis, agent: Agent[Any, Any]) -> None:
    """One short run with a listener, so lazy imports and script loading are not measured."""
    await asyncio.gather(
        listen_tokens(redis, "warm-up", Delivery()),
        run(NullSession(), agent, Pace(tokens=5).prompt(), deps(redis, "warm-up")),
    )


# Workloads.


async def finishes(run_: Awaitable[None]) -> bool:
    """Whether a run finished; one that failed (e.g. ours, its lease lost in a starved process) is reported."""
    try:
        await run_
    except Exception as e:
        print(f"a run failed: {e!r}", file=sys.stderr)
        return False
    return True


async def bare_run(agent: Agent[Any, Any], prompt: str, tokens: Delivery | None = None) -> None:
    """The ceiling: the agent iterated as `run` iterates it, with nothing done to its events (but, with
    `tokens`, each text event's latencies taken where this loop consumes it)."""
    async with agent.iter(prompt) as agent_run:
        async for node in agent_run:
            if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                async with node.stream(agent_run.ctx) as events:
                    async for event in events:
                        if tokens is not None:
                            tokens.add(event_text(event), time.monotonic_ns())


def event_text(event: Any) -> str:
    """The text a pydantic-ai text part event carries (the first token comes with its `PartStartEvent`)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return ""


async def write(url: str, runs: int, tokens: int, rounds: int) -> dict[str, Any]:
    """`runs` concurrent runs of `tokens` deltas each, as fast as the model yields them; no listeners.

    Each round times the same runs bare (`bare_run`), then through the package: its share of the ceiling
    is measured in one process, the two alternating, so the machine's load weighs on both alike.
    """
    redis, admin = counting_client(url), client(url)
    agent = Agent(paced_model())
    await warm_up(redis, agent)
    await bare_run(agent, Pace(tokens=5).prompt())
    prompt = Pace(tokens=tokens).prompt()
    commands, counts_before = 0, Counts(**asdict(redis.counts))
    events, seconds, bare_seconds = [], [], []
    for r in range(rounds):
        started = time.perf_counter()
        await asyncio.gather(*(bare_run(agent, prompt) for _ in range(runs)))
        bare_seconds.append(time.perf_counter() - started)
        commands_before = await redis_commands(admin)
        started = time.perf_counter()

        async def one(i: int) -> tuple[float, int]:
            await run(NullSession(), agent, prompt, deps(redis, f"w{r}-{i}"))  # noqa: B023 (awaited in the loop)
            ended = time.perf_counter()
            # Right away: the published package expires a stream 5 s after its run ends.
            return ended, await admin.xlen(stream_key(f"w{r}-{i}"))  # noqa: B023

        results = await asyncio.gather(*(one(i) for i in range(runs)))
        commands += await redis_commands(admin) - commands_before
        events.append(sum(n for _, n in results))
        seconds.append(max(t for t, _ in results) - started)
    return {
        "events": sum(events),
        "seconds": sum(seconds),
        "rates": [n / t for n, t in zip(events, seconds, strict=True)],
        "bare_rates": [n / t for n, t in zip(events, bare_seconds, strict=True)],
        "shares": [b / t for b, t in zip(bare_seconds, seconds, strict=True)],
        "round_trips": redis.counts.round_trips - counts_before.round_trips,
        "client_commands": redis.counts.commands - counts_before.commands,
        "redis_commands": commands,
    }


async def start_ramped(
    count: int, start: Callable[[int], Coroutine[Any, Any, T]], started: asyncio.Queue[None]
) -> list[asyncio.Task[T]]:
    """Start `count` tasks `START_RAMP` at a time; a batch is on its way once each of its models began."""
    tasks: list[asyncio.Task[T]] = []
    for first in range(0, count, START_RAMP):
        batch = range(first, min(count, first + START_RAMP))
        tasks += [asyncio.create_task(start(i)) for i in batch]
        async with asyncio.timeout(120):
            for _ in batch:
                await started.get()
    return tasks


async def paced(url: str, runs: int, tokens: int, interval: float, bare: bool = False) -> dict[str, Any]:
    """`runs` concurrent paced runs (ramped up), each with a listener started before it: every token's latency.

    `bare`: the same runs iterated by pydantic-ai alone (`bare_run`, no Redis), each token's latency taken where
    the loop consumes it: the ceiling of any runtime on top of it in one process.
    """
    redis, admin = client(url), client(url)
    await warm_up(redis, Agent(paced_model()))
    started = asyncio.Queue[None]()
    agent = Agent(paced_model(started=started))
    delivery = Delivery()
    run_seconds: list[float] = []
    cpu_before, redis_cpu_before = time.process_time(), await redis_cpu(admin)
    began = time.perf_counter()

    async def one(i: int) -> bool:
        prompt = Pace(tokens, interval).prompt()
        listener = None if bare else asyncio.create_task(listen_tokens(redis, f"p{i}", delivery))
        run_began = time.perf_counter()
        ok = await finishes(
            bare_run(agent, prompt, delivery) if bare else run(NullSession(), agent, prompt, deps(redis, f"p{i}"))
        )
        run_seconds.append(time.perf_counter() - run_began)  # its model's pace: slower when writes hold it back
        if listener is not None:
            await listener
        return ok

    finished = await asyncio.gather(*await start_ramped(runs, one, started))
    return {
        "failed_runs": finished.count(False),
        **delivery.result(),
        "seconds": time.perf_counter() - began,
        "run_seconds": run_seconds,
        "cpu_s": time.process_time() - cpu_before,
        "redis_cpu_s": await redis_cpu(admin) - redis_cpu_before,
    }


async def cancel_run(url: str, runs: int, tokens: int, interval: float, concurrency: int) -> dict[str, Any]:
    """Run paced runs, `concurrency` at a time, that another process cancels."""
    redis = client(url)
    agent = Agent(paced_model())
    await warm_up(redis, agent)
    slots = asyncio.Semaphore(concurrency)
    canceled = 0

    async def one(i: int) -> None:
        nonlocal canceled
        async with slots:
            try:
                await run(NullSession(), agent, Pace(tokens, interval).prompt(), deps(redis, f"c{i}"))
            except AgxCanceledError:
                canceled += 1

    await asyncio.gather(*(one(i) for i in range(runs)))
    return {"runs": runs, "canceled": canceled}


async def cancel_listen(url: str, runs: int, after_deltas: int) -> dict[str, Any]:
    """Listen to every session; after its `after_deltas`-th delta cancel it, time `cancel()` -> end."""
    redis = client(url)
    await warm_up(redis, Agent(paced_model()))
    await deps(redis, "warm-up").cancel()

    async def one(i: int) -> float:
        deltas, canceled_at = 0, 0.0
        async with contextlib.aclosing(deps(redis, f"c{i}").listen(serialize=False, wait=600)) as events:
            async for event in events:
                assert isinstance(event, dict)
                if event["type"] == "end":
                    break
                if event["body"].get("event") == "part_delta" and not canceled_at:
                    deltas += 1
                    if deltas == after_deltas:
                        if not await deps(redis, f"c{i}").cancel():
                            raise RuntimeError(f"c{i}: nothing to cancel")
                        canceled_at = time.perf_counter()
        if not canceled_at:
            raise RuntimeError(f"c{i} ended before its {after_deltas}th delta")
        return (time.perf_counter() - canceled_at) * 1000

    listeners = [asyncio.create_task(one(i)) for i in range(runs)]
    print(READY, file=sys.stderr, flush=True)
    return {"latencies_ms": await asyncio.gather(*listeners)}


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an `XREAD` reply, RESP2 (`[[key, entries]]`) or RESP3 (`{key: [entries]}`)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [entry for groups in reply.values() for entries in groups for entry in entries]
    return [entry for _, entries in reply for entry in entries]


async def wait_for_entries(
    admin: Redis, keys: Sequence[str], matches: Callable[[dict[bytes, bytes]], bool], timeout: float
) -> None:
    """Wait (one key at a time, on one connection) until each stream holds an entry whose fields `matches`."""
    deadline = time.monotonic() + timeout
    for key in keys:
        cursor: bytes | str = "0"
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise TimeoutError(f"{key} got no such entry within {timeout} s")
            # Blocks of at most 1 s: a longer one outlasts redis-py's socket timeout (5 s) on a silent stream.
            reply = await admin.xread({key: cursor}, block=min(remaining_ms, 1000))
            entries = _entries(reply)
            if any(matches(fields) for _, fields in entries):
                break
            if entries:
                cursor = entries[-1][0]


def is_part_start(fields: dict[bytes, bytes]) -> bool:
    """Whether a stream entry starts a part (a text part's first token comes with it)."""
    return b'"part_start"' in fields.get(b"body", b"")


async def first_tokens(admin: Redis, keys: Sequence[str], timeout: float) -> None:
    """Wait until each stream holds its run's first token."""
    await wait_for_entries(admin, keys, is_part_start, timeout)


async def stall(url: str, runs: int) -> dict[str, Any]:
    """RSS of this process before and while it holds `runs` runs whose model hangs after one token."""
    redis, admin = client(url), client(url)
    await admin.ping()
    await warm_up(redis, Agent(paced_model()))
    gc.collect()
    before = rss_kib()
    started = asyncio.Queue[None]()
    agent = Agent(paced_model(started=started))
    prompt = Pace(tokens=1, stall=True).prompt()

    async def one(i: int) -> None:
        await run(NullSession(), agent, prompt, deps(redis, f"s{i}"))

    tasks = await start_ramped(runs, one, started)
    await first_tokens(admin, [stream_key(f"s{i}") for i in range(runs)], timeout=60)
    gc.collect()
    after = rss_kib()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"runs": runs, "rss_before_kib": before, "rss_after_kib": after}


async def memory(url: str, tokens: int) -> dict[str, Any]:
    """`MEMORY USAGE` of a finished session's stream (read as soon as its run returns), and its field bytes."""
    redis, admin = client(url), client(url)
    await run(NullSession(), Agent(paced_model()), Pace(tokens).prompt(), deps(redis, "m"))
    usage = await admin.memory_usage(stream_key("m"), samples=0)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await admin.xrange(stream_key("m"))  # type: ignore[assignment]
    payload = sum(len(k) + len(v) for _, fields in entries for k, v in fields.items())
    return {"bytes": usage, "entries": len(entries), "payload_bytes": payload}


async def fanout_write(url: str, runs: int, tokens: int, interval: float) -> dict[str, Any]:
    """Start `runs` paced runs (ramped up) whose models wait for a `go` line on stdin, then tick out of step.

    The process stands for `pydantic-ai-stream worker`, and collects garbage as it does (`collect_less`, inlined:
    older checkouts lack it): at Python's defaults, second-generation collections over 1,000 runs' objects paused
    it for 100+ ms a few times a run, the fan-out's p99."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    redis = client(url)
    gate, started = asyncio.Event(), asyncio.Queue[None]()
    agent = Agent(paced_model(gate, started))
    await warm_up(redis, Agent(paced_model()))

    async def one(i: int) -> None:
        pace = Pace(tokens, interval, offset=interval * i / runs)  # spread: the runs do not tick in step
        await run(NullSession(), agent, pace.prompt(), deps(redis, f"f{i}"))

    tasks = await start_ramped(runs, one, started)
    await ready_then_go()
    gate.set()
    finished = [await finishes(task) for task in tasks]
    return {"runs": runs, "failed_runs": finished.count(False)}


async def ready_then_go() -> None:
    """Print `READY`, then wait for the `go` line the benchmark sends on stdin."""
    print(READY, file=sys.stderr, flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise RuntimeError(f"expected 'go' on stdin, got {line!r}")


# The read path (ours only: `listen(after=...)` and `Deps.start` without `run` are not in the published API).

KEPT_SECONDS = 3600
"""`stop(grace_period=)` of the runs these workloads write: their streams outlive the measurement."""


async def add_numbered(run_deps: Deps, entries: int, size: int) -> None:
    """Append `entries` `info` entries carrying `seq` (0, 1, ...) and `size` bytes of padding, as fast as it goes."""
    pad = "x" * size
    for seq in range(entries):
        await run_deps.add_info({"seq": seq, "pad": pad})
    await run_deps.flush()


async def entry_ids(admin: Redis, key: str, page: int = 100) -> list[str]:
    """Every entry id of a stream, oldest first (read in pages: entries may be large)."""
    ids: list[str] = []
    start = "-"
    while True:
        entries: list[tuple[bytes, Any]] = await admin.xrange(key, min=start, count=page)  # type: ignore[assignment]
        if not entries:
            return ids
        ids += [entry_id.decode() for entry_id, _ in entries]
        start = f"({ids[-1]}"


def resume_cursors(ids: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` cursors drawn (seeded) from `ids`, never the newest: an entry after each is in the stream."""
    return random.Random(seed).choices(ids[:-1], k=count)


async def first_event_ms(events: AsyncGenerator[Any, None]) -> float:
    """Milliseconds from asking a listener (not started yet) for its first event to getting it; then closes it."""
    started = time.perf_counter()
    async with contextlib.aclosing(events):
        async for _ in events:
            return (time.perf_counter() - started) * 1000
    raise RuntimeError("the listener ended without an event")


def resumed(run_deps: Deps, after: str) -> AsyncGenerator[Any, None]:
    return run_deps.listen(after=after, serialize=False, wait=10)


async def resume(url: str, entries: int, size: int, resumes: int, seed: int) -> dict[str, Any]:
    """Write a live and a finished run of `entries` numbered entries; time `listen(after=...)` on each.

    Then the live run stays live until `go` (the benchmark resumes it through gRPC meanwhile).
    """
    redis = client(url)
    live, done = deps(redis, "live"), deps(redis, "done")
    for run_deps in (live, done):
        await run_deps.start()
        await add_numbered(run_deps, entries, size)
    await done.stop(grace_period=KEPT_SECONDS)
    latencies: dict[str, list[float]] = {}
    for run_deps in (live, done):
        cursors = resume_cursors(await entry_ids(redis, stream_key(run_deps.session_id)), resumes, seed)
        await first_event_ms(resumed(run_deps, cursors[0]))  # warm-up: the first listener starts the reader
        latencies[run_deps.session_id] = [await first_event_ms(resumed(run_deps, cursor)) for cursor in cursors]
    await ready_then_go()
    await live.stop(grace_period=KEPT_SECONDS)
    return {"live_ms": latencies["live"], "done_ms": latencies["done"]}


async def bulk_write(url: str, entries: int, size: int) -> dict[str, Any]:
    """Begin a run, then at `go` write `entries` numbered entries of `size` bytes as fast as it can, and end it."""
    redis = client(url)
    run_deps = deps(redis, "bulk")
    await run_deps.start()
    await ready_then_go()
    started = time.perf_counter()
    await add_numbered(run_deps, entries, size)
    await run_deps.stop(grace_period=KEPT_SECONDS)
    return {"seconds": time.perf_counter() - started}


WORKLOADS: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
    "write": write,
    "paced": paced,
    "paced-bare": functools.partial(paced, bare=True),
    "cancel-run": cancel_run,
    "cancel-listen": cancel_listen,
    "stall": stall,
    "memory": memory,
    "fanout-write": fanout_write,
    "resume": resume,
    "bulk-write": bulk_write,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--redis", required=True, metavar="URL")
    parser.add_argument("--prefix", default="bench", help="Redis key prefix")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="write: rounds, each bare then through the package")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between a run's tokens")
    parser.add_argument("--concurrency", type=int, default=20, help="cancel-run: runs at a time")
    parser.add_argument("--after-deltas", type=int, default=10, help="cancel-listen: cancel after this delta")
    parser.add_argument("--entries", type=int, default=100, help="resume, bulk-write: entries to write")
    parser.add_argument("--size", type=int, default=100, help="resume, bulk-write: padding bytes per entry")
    parser.add_argument("--resumes", type=int, default=10, help="resume: resumes per run")
    parser.add_argument("--seed", type=int, default=1, help="resume: seed of the resume cursors")
    return parser


def main() -> None:
    args = _parser().parse_args()
    settings.set_redis_prefix(args.prefix)
    options = {
        "write": {"runs": args.runs, "tokens": args.tokens, "rounds": args.rounds},
        "paced": {"runs": args.runs, "tokens": args.tokens, "interval": args.interval},
        "paced-bare": {"runs": args.runs, "tokens": args.tokens, "interval": args.interval},
        "cancel-run": {"runs": args.runs, "tokens": args.tokens, "interval": args.interval,
                       "concurrency": args.concurrency},
        "cancel-listen": {"runs": args.runs, "after_deltas": args.after_deltas},
        "stall": {"runs": args.runs},
        "memory": {"tokens": args.tokens},
        "fanout-write": {"runs": args.runs, "tokens": args.tokens, "interval": args.interval},
        "resume": {"entries": args.entries, "size": args.size, "resumes": args.resumes, "seed": args.seed},
        "bulk-write": {"entries": args.entries, "size": args.size},
    }[args.workload]  # fmt: skip
    result = asyncio.run(WORKLOADS[args.workload](args.redis, **options))
    result["package_version"] = version("pydantic-ai-stream")
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
