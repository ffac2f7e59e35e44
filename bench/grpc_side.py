"""Our gRPC server as a process of its own, and clients in this process: Run, Listen, token latencies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc

from bench.grpc_floor import IDLE_OPEN
from bench.procs import QUEUE_WORKER_READY, ROOT, SERVER_CLIENT_NAME, SERVER_READY, Proc
from bench.suite import PREFIX, Bench, cpu_seconds, rss_kib
from bench.worker import Delivery, Pace, first_event_ms
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.v1 import stream_pb2 as pb
from pydantic_ai_stream.v1 import stream_pb2_grpc as pb_grpc

STREAMS_PER_CHANNEL = 1_000
RAMP = 100
"""Listen streams (and runs) opened at a time."""
AGENT = "paced"
OK_AGENT = "ok"
"""Answers "ok" to any prompt (see `bench/agents.py`)."""

Starter = Callable[[StreamClient, str], Awaitable[object]]


@dataclass(frozen=True)
class Server:
    proc: Proc
    target: str
    pids: tuple[int, ...] = ()
    """Its serving processes (`--processes N`: the children of `proc`); none: `proc` serves."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """CPU its serving processes have used."""
        return sum(cpu_seconds(pid) for pid in self.pids or (self.pid,))


HOSTED = ["--no-demo", "--agent", f"{AGENT}=bench.agents:paced", "--agent", f"{OK_AGENT}=bench.agents:ok"]
"""The agents our server and queue workers host."""


def _env(settings: Mapping[str, str] | None) -> dict[str, str]:
    """Our processes' environment: `bench.agents` importable, the bench's key prefix, then `settings`."""
    return {"PYTHONPATH": str(ROOT), "PYDANTIC_AI_STREAM_REDIS_PREFIX": PREFIX, **(settings or {})}


@contextlib.asynccontextmanager
async def our_server(
    bench: Bench, *, concurrency: int | None = None, settings: Mapping[str, str] | None = None, processes: int = 1
) -> AsyncIterator[Server]:
    """`pydantic-ai-stream serve` hosting the bench's agents on a free port; its Redis connections are named.

    The server runs with its defaults (a shared pool of 6 connections plus its one blocking reader; it
    executes 64 runs at once) unless `concurrency` (0: API only) or `settings` (`PYDANTIC_AI_STREAM_*`) say.
    """
    url = f"{bench.redis.url}?client_name={SERVER_CLIENT_NAME}"
    cmd = [bench.python("ours"), "-m", "pydantic_ai_stream", "serve", "--port", "0", *HOSTED, "--redis", url,
           "--grace", "0"]  # fmt: skip
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    proc = await bench.procs.start("server", cmd, env=_env(settings), echo=False)
    try:
        [match, *_] = await proc.wait_lines(SERVER_READY, processes, timeout=60)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()  # noqa: ASYNC240 - /proc, no disk
        pids = tuple(int(pid) for pid in children.split()) if processes > 1 else ()
        yield Server(proc=proc, target=f"127.0.0.1:{match[1]}", pids=pids)
    finally:
        await bench.procs.stop(proc)


FLOORS = {"aio": "grpc.aio alone", "sync": "sync grpc.server, a thread per stream"}
"""The floor servers (`bench/grpc_floor.py`): Listen served by grpc with nothing else done."""


@contextlib.asynccontextmanager
async def floor_server(
    bench: Bench, variant: str, *, sessions: int, listeners: int, idle: bool = False
) -> AsyncIterator[Server]:
    """`bench/grpc_floor.py` serving the fan-out's sessions on its schedule; it starts on a `go` line on stdin.
    `idle`: it sends nothing, and prints a line as each stream opens."""
    s = bench.sizes
    cmd = [bench.python("ours"), "-m", "bench.grpc_floor", variant, "--sessions", str(sessions), "--listeners",
           str(listeners), "--tokens", str(s.fanout_tokens), "--interval", str(s.fanout_interval)]  # fmt: skip
    if idle:
        cmd.append("--idle")
    proc = await bench.procs.start(f"floor {variant}", cmd, env=_env(None), stdin=True, echo=False)
    try:
        match = await proc.wait_line(SERVER_READY, timeout=60)
        yield Server(proc=proc, target=f"127.0.0.1:{match[1]}")
    finally:
        await bench.procs.stop(proc)


async def idle_rss_per_stream(bench: Bench, sessions: int, listeners: int) -> float:
    """RSS growth (KiB) per Listen stream of a grpc.aio floor that sends nothing on them: what grpc holds for an
    open stream. Opened `RAMP` at a time, each batch once the server has counted it."""
    streams = sessions * listeners
    async with (
        floor_server(bench, "aio", sessions=sessions, listeners=listeners, idle=True) as server,
        clients(server.target, streams) as callers,
    ):
        before, calls = rss_kib(server.pid), []
        try:
            for n in range(streams):
                client = callers[n % len(callers)]
                request = pb.ListenRequest(session_id=f"f{n // listeners}")
                calls.append(client.stub.Listen(request, metadata=client.metadata))
                if len(calls) % RAMP == 0 or len(calls) == streams:
                    await server.proc.wait_line(f"{IDLE_OPEN} {len(calls)}$", timeout=60)
            return (rss_kib(server.pid) - before) / streams
        finally:
            for call in calls:
                call.cancel()


@contextlib.asynccontextmanager
async def queue_worker(bench: Bench, name: str, concurrency: int) -> AsyncIterator[Proc]:
    """`pydantic-ai-stream worker` executing queued runs of the bench's agents, `concurrency` at once."""
    proc = await start_queue_worker(bench, name, concurrency)
    try:
        yield proc
    finally:
        await bench.procs.stop(proc)


async def start_queue_worker(
    bench: Bench, name: str, concurrency: int, settings: Mapping[str, str] | None = None
) -> Proc:
    """`queue_worker`, returned once it claims runs; the caller stops it (`bench.procs.stop`, also on exit)."""
    cmd = [bench.python("ours"), "-m", "pydantic_ai_stream", "worker", *HOSTED, "--redis", bench.redis.url,
           "--concurrency", str(concurrency), "--grace", "0"]  # fmt: skip
    proc = await bench.procs.start(name, cmd, env=_env(settings), echo=False)
    try:
        await proc.wait_line(QUEUE_WORKER_READY, timeout=60)
    except BaseException:
        await bench.procs.stop(proc)
        raise
    return proc


async def _client(target: str, index: int) -> StreamClient:
    """A client on a channel of its own: a distinct channel arg keeps gRPC from sharing its connection."""
    client = StreamClient(target)
    await client.channel.close()  # never used: replaced by a channel with options
    client.channel = grpc.aio.insecure_channel(target, options=[("bench.channel", index)])
    client.stub = pb_grpc.AgentStreamServiceStub(client.channel)
    return client


@contextlib.asynccontextmanager
async def clients(
    target: str, streams: int, per_channel: int = STREAMS_PER_CHANNEL
) -> AsyncIterator[list[StreamClient]]:
    """One client (channel, TCP connection) per `per_channel` concurrent streams."""
    opened = [await _client(target, i) for i in range(max(1, math.ceil(streams / per_channel)))]
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


def token_text(event: pb.Event) -> str:
    """The text a text part event carries (the first token comes with `part_start`)."""
    if event.kind == pb.EVENT_KIND_PART_DELTA:
        return event.content_delta
    if event.kind == pb.EVENT_KIND_PART_START and event.part_kind == pb.PART_KIND_TEXT:
        return event.content
    return ""


async def listen_tokens(
    client: StreamClient, session_id: str, sink: Delivery, begun: asyncio.Event | None = None
) -> bool:
    """Listen to a session up to its end, adding each token's delivery latencies to `sink`.

    Returns whether the stream carried an `error` event (its run failed or was cancelled).
    """
    errored = False
    async for event in client.listen(session_id, wait_seconds=600):
        now = time.monotonic_ns()
        if event.type == pb.EVENT_TYPE_BEGIN and begun is not None:
            begun.set()
        errored = errored or event.type == pb.EVENT_TYPE_ERROR
        sink.add(token_text(event), now)
    return errored


async def warm_up(client: StreamClient) -> None:
    """One short run and its Listen, so the server's lazy start-up is not measured."""
    listener = asyncio.create_task(listen_tokens(client, "warm-up", Delivery()))
    await client.run(AGENT, "warm-up", Pace(tokens=5).prompt())
    await listener


async def run_ramped(sessions: Sequence[tuple[StreamClient, str]], agent: str, prompt: str) -> list[float]:
    """A gRPC `Run` per session, `RAMP` at a time (each batch once the previous one has returned); each
    call's latency (ms)."""
    latencies: list[float] = []

    async def one(client: StreamClient, session_id: str) -> None:
        started = time.perf_counter()
        await client.run(agent, session_id, prompt)
        latencies.append((time.perf_counter() - started) * 1000)

    for first in range(0, len(sessions), RAMP):
        await asyncio.gather(*(one(client, session_id) for client, session_id in sessions[first : first + RAMP]))
    return latencies


@dataclass
class Listeners:
    """Listen streams recording token latencies (`delivery`); opened in ramps, cancelled if left before they end.

    A ramp: grpc-core cancels new calls beyond 1,000 a server has not yet picked up
    (`grpc.server.max_pending_requests`), and a Python server picks them up slower than a burst
    of thousands arrives.
    """

    timeout: float
    delivery: Delivery = field(default_factory=Delivery)
    tasks: list[asyncio.Task[bool]] = field(default_factory=list)
    errored: int = 0
    """Streams that carried an `error` event (set by `finish`)."""

    async def open(self, sessions: Sequence[tuple[StreamClient, str]], start: Starter | None = None) -> None:
        """Open a stream per session, `RAMP` at a time: each batch (`start`ed first) has its `begin` before the next."""
        for first in range(0, len(sessions), RAMP):
            batch = sessions[first : first + RAMP]
            begun = [asyncio.Event() for _ in batch]
            tasks = [
                asyncio.create_task(listen_tokens(client, session_id, self.delivery, event))
                for (client, session_id), event in zip(batch, begun, strict=True)
            ]
            self.tasks += tasks
            if start is not None:
                await asyncio.gather(*(start(client, session_id) for client, session_id in batch))
            await all_set(begun, tasks, self.timeout)

    async def finish(self) -> None:
        """Wait until every stream has ended."""
        async with asyncio.timeout(self.timeout):
            self.errored = sum(await asyncio.gather(*self.tasks))

    async def __aenter__(self) -> Listeners:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def all_set(events: Sequence[asyncio.Event], tasks: Sequence[asyncio.Task[Any]], timeout: float) -> None:
    """Wait until every event is set; fail after `timeout`, or if a task ends before setting its event."""
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(_set_or_ended(event, task) for event, task in zip(events, tasks, strict=True)))


async def _set_or_ended(event: asyncio.Event, task: asyncio.Task[Any]) -> None:
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not event.is_set():
        task.result()  # raises its error
        raise RuntimeError("a Listen stream ended before its begin")


async def resume_ms(client: StreamClient, session_id: str, after: str) -> float:
    """Milliseconds from sending a Listen with `after_event_id` to receiving its first event."""
    events = client.listen(session_id, after=after, wait_seconds=10, retries=0)
    return await first_event_ms(cast(AsyncGenerator[pb.Event, None], events))  # it is an async generator


@dataclass
class Reading:
    """What one Listen stream received: every event id, the `seq` of each `info` entry, whether `end` came."""

    ids: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    ended: bool = False

    def complete(self, entries: int) -> bool:
        """Whether it got the `entries` numbered entries exactly once each, in order, with ids rising, then `end`."""
        keys = [tuple(map(int, entry_id.split("-"))) for entry_id in self.ids]
        rising = all(a < b for a, b in itertools.pairwise(keys))
        return self.ended and rising and self.seqs == list(range(entries))


async def read_to_end(
    client: StreamClient, session_id: str, *, interval: float = 0.0, begun: asyncio.Event | None = None
) -> Reading:
    """Listen to a session up to its `end`, taking `interval` seconds per event (a slow consumer).

    One call, never resumed: a dropped stream fails the reading instead of being papered over.
    """
    reading = Reading()
    request = pb.ListenRequest(session_id=session_id, wait_seconds=60)
    call = client.stub.Listen(request, metadata=client.metadata)
    try:
        async for response in call:
            if response.WhichOneof("payload") != "event":
                continue
            event = response.event
            reading.ids.append(event.id)
            if event.type == pb.EVENT_TYPE_BEGIN and begun is not None:
                begun.set()
            elif event.type == pb.EVENT_TYPE_INFO:
                reading.seqs.append(json.loads(event.body_json)["seq"])
            elif event.type == pb.EVENT_TYPE_END:
                reading.ended = True
                break
            if interval:
                await asyncio.sleep(interval)  # the consumer's pace, not synchronisation
    finally:
        call.cancel()
    return reading
