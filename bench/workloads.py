"""The workloads: each measures both sides (or ours alone where only ours can) and returns table rows."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from statistics import median
from typing import Any

from bench import capacity, cores, durable, grpc_side, load, queue_ab, telemetry
from bench.procs import WORKER_READY, Proc, output
from bench.suite import PREFIX, Bench, Side, cpu_seconds, progress, reset_peak_rss, rss_kib
from bench.table import Row, percentile
from bench.worker import Pace, entry_ids, first_tokens, is_part_start, resume_cursors, wait_for_entries
from pydantic_ai_stream.client import StreamClient


def _per_side(results: dict[Side, dict[str, Any]], figure: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    return {side: figure(result) for side, result in results.items()}


def _row(workload: str, figure: str, values: dict[str, Any], decimals: int = 0) -> Row:
    return Row(workload, figure, values.get("ours"), values.get("published"), decimals)


def _stream_key(session_id: str) -> str:
    """The stream of a session of our server's caller (no auth: scope 1, user 1)."""
    return f"{PREFIX}:1:1:{session_id}"


# 1. Write throughput


async def write(bench: Bench) -> list[Row]:
    """Events/s, client round trips and Redis commands per event: one run, then many at once; first the
    ceiling, the same agent iterated with nothing done to its events, in rounds alternating with the runs."""
    s = bench.sizes
    rows = []
    for label, runs, tokens in (
        (f"write: 1 run x {s.write_tokens:,} deltas, no pacing", 1, s.write_tokens),
        (f"write: {s.many_runs} runs at once x {s.many_tokens:,} deltas", s.many_runs, s.many_tokens),
    ):
        results = await bench.both("write", runs=runs, tokens=tokens, rounds=s.write_rounds)
        rows += [
            _row(label, "bare pydantic-ai events/s (the ceiling), median of rounds",
                 _per_side(results, lambda r: median(r["bare_rates"]))),
            _row(label, "events/s, median of rounds", _per_side(results, lambda r: median(r["rates"]))),
            _row(label, "share of the ceiling (its time / this time, same process), median",
                 _per_side(results, lambda r: median(r["shares"])), 2),
            _row(label, "client round trips / event", _per_side(results, lambda r: r["round_trips"] / r["events"]), 2),
            _row(label, "Redis commands / event", _per_side(results, lambda r: r["redis_commands"] / r["events"]), 2),
        ]  # fmt: skip
    return rows


# 2. Concurrent paced runs


def _latency_rows(label: str, results: dict[Side, dict[str, Any]], demanded: float) -> list[Row]:
    due = _per_side(results, lambda r: r["latencies_ms"])
    made = _per_side(results, lambda r: r["yield_latencies_ms"])
    return [
        _row(label, "delivery p50 (ms, from each token's due time)", {k: percentile(v, 50) for k, v in due.items()}, 1),
        _row(label, "delivery p99 (ms, from each token's due time)", {k: percentile(v, 99) for k, v in due.items()}, 1),
        _row(label, "delivery p99 from the model's yield (ms; the earlier measure)",
             {k: percentile(v, 99) for k, v in made.items()}, 1),
        _row(label, f"tokens/s delivered (demanded {demanded:,.0f})",
             _per_side(results, lambda r: len(r["latencies_ms"]) / r["seconds"])),
    ]  # fmt: skip


def _bare_rows(label: str, results: dict[Side, dict[str, Any]]) -> list[Row]:
    """The ceiling, shown first: the same runs iterated by pydantic-ai alone in a process (`paced-bare`)."""
    due = _per_side(results, lambda r: r["latencies_ms"])
    return [
        _row(label, "bare pydantic-ai, the same runs in one process (the ceiling): tokens/s",
             _per_side(results, lambda r: len(r["latencies_ms"]) / r["seconds"])),
        _row(label, "bare pydantic-ai: delivery p50 (ms, from due, where its loop takes each token)",
             {k: percentile(v, 50) for k, v in due.items()}, 1),
        _row(label, "bare pydantic-ai: delivery p99 (ms, from due)", {k: percentile(v, 99) for k, v in due.items()}, 1),
        _row(label, "bare pydantic-ai: CPU s / 1k tokens", _per_1k(results, "cpu_s"), 3),
    ]  # fmt: skip


def _per_1k(results: dict[Side, dict[str, Any]], key: str) -> dict[str, Any]:
    return _per_side(results, lambda r: r[key] / len(r["latencies_ms"]) * 1000)


async def paced(bench: Bench) -> list[Row]:
    """Delivery latency and CPU of N concurrent runs at 50 tokens/s, one listener each; a light load; gRPC.
    Each first bare (`paced-bare`): what pydantic-ai alone delivers of the same runs, in each side's process."""
    s = bench.sizes
    rows, bare_ours = [], {}
    for label, runs in (
        (f"paced: {s.paced_runs:,} runs x {s.paced_tokens} tokens at 50/s, a listener each", s.paced_runs),
        (f"paced, light load: {s.paced_light_runs} runs x {s.paced_tokens} tokens at 50/s, a listener each",
         s.paced_light_runs),
    ):  # fmt: skip
        options = {"runs": runs, "tokens": s.paced_tokens, "interval": s.paced_interval}
        bare = await bench.both("paced-bare", **options)
        rows += _bare_rows(label, bare)
        bare_ours[runs] = bare["ours"]
        results = await bench.both("paced", **options)
        rows += _latency_rows(label, results, runs / s.paced_interval)
        if runs == s.paced_runs:
            rows += [
                _row(label, "worker CPU s / 1k tokens", _per_1k(results, "cpu_s"), 3),
                _row(label, "Redis CPU s / 1k tokens", _per_1k(results, "redis_cpu_s"), 3),
                _row(label, "runs that failed", _per_side(results, lambda r: r["failed_runs"])),
            ]
    return rows + await _grpc_paced(bench, bare_ours)


async def _grpc_paced(bench: Bench, bare_ours: dict[int, dict[str, Any]]) -> list[Row]:
    """Ours through gRPC; first bare pydantic-ai in ours' interpreter (`bare_ours`: measured already, by runs)."""
    s = bench.sizes
    runs = s.grpc_paced_runs
    label = f"paced via gRPC Run + Listen: {runs:,} runs x {s.paced_tokens} tokens at 50/s"
    bare = bare_ours.get(runs) or await bench.worker(
        "ours", "paced-bare", runs=runs, tokens=s.paced_tokens, interval=s.paced_interval
    )
    progress(f"paced via gRPC: ours, {runs} runs")
    results: dict[Side, dict[str, Any]] = {"ours": await load.paced(bench, runs)}
    return [
        *_bare_rows(label, {"ours": bare}),
        *_latency_rows(label, results, runs / s.paced_interval),
        _row(label, "server CPU s / 1k tokens", _per_1k(results, "server_cpu_s"), 3),
        _row(label, "Redis CPU s / 1k tokens", _per_1k(results, "redis_cpu_s"), 3),
        _row(label, "streams that got an error event", {"ours": results["ours"]["errored"]}),
    ]


# 3. Cancel latency


async def cancel(bench: Bench) -> list[Row]:
    """From `cancel()` returning (in another process than the run's) to its listener seeing the end."""
    s = bench.sizes
    label = (f"cancel: {s.cancel_runs} runs ({s.cancel_concurrency} at a time) at 50 tokens/s, "
             f"from another process after the {s.cancel_after_deltas}th delta")  # fmt: skip
    results: dict[Side, dict[str, Any]] = {}
    for side in bench.sides():
        ran, listened = await bench.worker_pair(
            side,
            ("cancel-listen", {"runs": s.cancel_runs, "after_deltas": s.cancel_after_deltas}),
            ("cancel-run", {"runs": s.cancel_runs, "tokens": s.cancel_tokens, "interval": s.paced_interval,
                            "concurrency": s.cancel_concurrency}),
        )  # fmt: skip
        if ran["canceled"] != s.cancel_runs:
            raise RuntimeError(f"{side}: only {ran['canceled']} of {s.cancel_runs} runs were cancelled")
        results[side] = listened
    latencies = _per_side(results, lambda r: r["latencies_ms"])
    return [
        _row(label, "cancel() -> end p50 (ms)", {k: percentile(v, 50) for k, v in latencies.items()}, 1),
        _row(label, "cancel() -> end p99 (ms)", {k: percentile(v, 99) for k, v in latencies.items()}, 1),
    ]


# 4. Fan-out


async def fanout(bench: Bench) -> list[Row]:
    """M sessions x K gRPC Listen streams on one server; the runs are written by a separate worker. First the
    floor: the same streams, schedule and clients against grpc alone (`bench/grpc_floor.py`). The streams are
    the bench's clients (`bench/load.py`: Go's when it has them)."""
    s = bench.sizes
    streams = s.fanout_sessions * s.fanout_listeners
    pace = f"{s.fanout_tokens} tokens/run at {1 / s.fanout_interval:g}/s, {load.clients_label(bench)}"
    rows = [row for variant in grpc_side.FLOORS for row in await _floor(bench, variant, pace)]
    label = f"fan-out (ours): {s.fanout_sessions:,} sessions x {s.fanout_listeners} gRPC Listen = {streams:,} " \
            f"streams on 1 server, {pace}"  # fmt: skip
    await bench.redis.reset()
    progress(f"fan-out: ours, {streams} streams")
    async with grpc_side.our_server(bench) as server, grpc_side.clients(server.target, 1) as warming:
        await grpc_side.warm_up(warming[0])
        writer = await bench.start_worker(
            "ours", "fanout-write", stdin=True, runs=s.fanout_sessions, tokens=s.fanout_tokens,
            interval=s.fanout_interval,
        )  # fmt: skip
        await writer.wait_line(WORKER_READY, timeout=s.worker_timeout)
        result = await _fan_out(bench, server, s.fanout_sessions, writer)
        result["failed_runs"] = (await output(writer, s.worker_timeout))["failed_runs"]
        await bench.procs.stop(writer)

    def ours(key: str) -> dict[str, Any]:
        return {"ours": result[key]}

    return [
        *rows,
        _row(label, "Redis connections held by the server", ours("connections")),
        *_fan_out_rows(label, result, streams / s.fanout_interval),
        _row(label, "writer runs that failed", ours("failed_runs")),
        _row(label, "streams that got an error event", ours("errored")),
    ]


async def _floor(bench: Bench, variant: str, pace: str) -> list[Row]:
    """The fan-out against a floor server: grpc alone pushing the same tokens to the same streams."""
    s = bench.sizes
    sessions = s.fanout_sessions if variant == "aio" else s.fanout_sync_sessions
    streams = sessions * s.fanout_listeners
    label = f"fan-out floor ({grpc_side.FLOORS[variant]}): {sessions:,} sessions x {s.fanout_listeners} Listen = " \
            f"{streams:,} streams, {pace}"  # fmt: skip
    progress(f"fan-out floor: {variant}, {streams} streams")
    async with grpc_side.floor_server(bench, variant, sessions=sessions, listeners=s.fanout_listeners) as server:
        result = await _fan_out(bench, server, sessions, server.proc)
    rows = _fan_out_rows(label, result, streams / s.fanout_interval)
    if variant == "aio":
        progress(f"fan-out floor: {variant}, {streams} idle streams (Python clients)")
        idle = await grpc_side.idle_rss_per_stream(bench, sessions, s.fanout_listeners)
        rows.insert(3, _row(label, "server RSS per idle open stream (KiB; nothing ever sent)", {"ours": idle}, 1))
    return rows


def _fan_out_rows(label: str, result: dict[str, float], demanded: float) -> list[Row]:
    def ours(key: str) -> dict[str, Any]:
        return {"ours": result[key]}

    return [
        _row(label, "server RSS, all streams open (MiB)", ours("rss_open_mib"), 1),
        _row(label, "server RSS, peak (MiB)", ours("rss_peak_mib"), 1),
        _row(label, "server RSS per open stream (KiB; growth while they opened)", ours("rss_per_stream_kib"), 1),
        _row(label, "delivery p50 (ms, from due)", ours("p50"), 1),
        _row(label, "delivery p99 (ms, from due)", ours("p99"), 1),
        _row(label, f"deliveries/s (demanded {demanded:,.0f})", ours("rate")),
        _row(label, "server CPU s / 1k deliveries", ours("cpu_per_1k"), 3),
        _row(label, "the clients' CPU s / 1k deliveries (the bench process's, or the Go program's)",
             ours("client_cpu_per_1k"), 3),
    ]  # fmt: skip


async def _fan_out(bench: Bench, server: grpc_side.Server, sessions: int, go_to: Proc) -> dict[str, float]:
    """Open every stream (the tokens wait for `go_to`'s `go`), note connections and RSS, then let tokens flow."""
    s = bench.sizes
    streams = sessions * s.fanout_listeners
    at_go: dict[str, float] = {}

    async def clock() -> None:
        at_go.update(connections=await bench.redis.server_connections(), rss_open=rss_kib(server.pid))
        progress(f"fan-out: {streams} streams open, server holds {at_go['connections']:.0f} Redis connections; go")
        await _go(go_to)
        at_go["cpu"] = cpu_seconds(server.pid)

    rss_before = rss_kib(server.pid)
    result = await load.listen(bench, server.target, load.Load("f", sessions, s.fanout_listeners), clock,
                               after_open=True)  # fmt: skip
    cpu, latencies = cpu_seconds(server.pid) - at_go["cpu"], result["latencies_ms"]
    return {
        "connections": at_go["connections"],
        "rss_open_mib": at_go["rss_open"] / 1024,
        "rss_per_stream_kib": (at_go["rss_open"] - rss_before) / streams,
        "rss_peak_mib": rss_kib(server.pid, peak=True) / 1024,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "rate": len(latencies) / result["seconds"],
        "cpu_per_1k": cpu / len(latencies) * 1000,
        "client_cpu_per_1k": result["client_cpu_s"] / len(latencies) * 1000,
        "errored": result["errored"],
    }


async def _go(worker: Proc) -> None:
    """Send a waiting worker (`ready_then_go`) its `go`."""
    assert worker.process.stdin is not None
    worker.process.stdin.write(b"go\n")
    await worker.process.stdin.drain()


# 5. Footprint


async def footprint(bench: Bench) -> list[Row]:
    """RSS per active (stalled) run, in a library process and in our server; Redis bytes per finished stream."""
    s = bench.sizes
    n = s.stalled_runs
    stalled = await bench.both("stall", runs=n)
    per_run = _per_side(stalled, lambda r: (r["rss_after_kib"] - r["rss_before_kib"]) / r["runs"])
    memory = await bench.both("memory", tokens=s.memory_tokens)
    stream_label = f"footprint: a finished session's stream ({s.memory_tokens} deltas)"
    return [
        _row(f"footprint: {n} active runs (model hangs after 1 token)", "library process RSS / run (KiB)", per_run),
        _row(f"footprint: {n} active runs (model hangs after 1 token)", "server process RSS / run via gRPC Run (KiB)",
             {"ours": await _server_stall(bench, n)}),
        _row(stream_label, "Redis MEMORY USAGE (bytes)", _per_side(memory, lambda r: r["bytes"])),
        _row(stream_label, "entries", _per_side(memory, lambda r: r["entries"])),
        _row(stream_label, "field bytes (names + values)", _per_side(memory, lambda r: r["payload_bytes"])),
    ]  # fmt: skip


async def _server_stall(bench: Bench, runs: int) -> float:
    """Server RSS growth per run while it holds `runs` stalled runs started through gRPC `Run`."""
    await bench.redis.reset()
    progress(f"footprint: ours via gRPC, {runs} stalled runs")
    # Every run executes at once (the server executes 64 by default; the rest would wait in its queue).
    async with (
        grpc_side.our_server(bench, concurrency=runs) as server,
        grpc_side.clients(server.target, runs) as clients,
    ):
        await grpc_side.warm_up(clients[0])
        before = rss_kib(server.pid)
        prompt = Pace(tokens=1, stall=True).prompt()
        await asyncio.gather(*(clients[0].run(grpc_side.AGENT, f"s{i}", prompt) for i in range(runs)))
        await first_tokens(bench.redis.client, [_stream_key(f"s{i}") for i in range(runs)], timeout=60)
        return (rss_kib(server.pid) - before) / runs


# 6. Read path: resume latency


RESUME_SEED = 1


async def resume(bench: Bench) -> list[Row]:
    """From a Listen with `after_event_id` (and the library's `listen(after=...)`) to its first event."""
    s = bench.sizes
    rows = []
    async with grpc_side.our_server(bench) as server, grpc_side.clients(server.target, 1) as clients:
        await grpc_side.warm_up(clients[0])
        cases = (
            (s.resume_entries, s.resume_entry_bytes, s.resumes),
            (s.resume_big_entries, s.big_entry_bytes, s.big_resumes),
        )
        for entries, size, resumes in cases:
            rows += await _resumes(bench, server, clients[0], entries, size, resumes)
    return rows


async def _resumes(
    bench: Bench, server: grpc_side.Server, client: StreamClient, entries: int, size: int, resumes: int
) -> list[Row]:
    """A worker writes a live and a finished run and times its library resumes; then the gRPC resumes, one at a time."""
    s = bench.sizes
    await bench.redis.reset()
    progress(f"resume: ours, {resumes} resumes of each of 2 runs of {entries} x {size} B entries")
    worker = await bench.start_worker(
        "ours", "resume", stdin=True, entries=entries, size=size, resumes=resumes, seed=RESUME_SEED
    )
    await worker.wait_line(WORKER_READY, timeout=s.worker_timeout)
    grpc_ms: dict[str, list[float]] = {}
    peak_kib: dict[str, int] = {}
    for session_id in ("live", "done"):
        cursors = resume_cursors(await entry_ids(bench.redis.client, _stream_key(session_id)), resumes, RESUME_SEED)
        await grpc_side.resume_ms(client, session_id, cursors[0])  # warm-up: the server's first Listen of it
        reset_peak_rss(server.pid)
        grpc_ms[session_id] = [await grpc_side.resume_ms(client, session_id, cursor) for cursor in cursors]
        peak_kib[session_id] = rss_kib(server.pid, peak=True)
    await _go(worker)
    library_ms = await output(worker, s.worker_timeout)
    await bench.procs.stop(worker)
    rows = []
    for session_id, run in (("live", "live run"), ("done", "finished run")):
        label = (f"resume (ours): {resumes} resumes at random points of a {run} of {entries:,} entries "
                 f"x {size:,} B")  # fmt: skip
        grpc_p, library_p = _percentiles(grpc_ms[session_id]), _percentiles(library_ms[f"{session_id}_ms"])
        rows += [
            _row(label, "gRPC Listen(after_event_id) -> first event p50 (ms)", {"ours": grpc_p[0]}, 1),
            _row(label, "gRPC Listen(after_event_id) -> first event p99 (ms)", {"ours": grpc_p[1]}, 1),
            _row(label, "server RSS peak while resuming (MiB)", {"ours": peak_kib[session_id] / 1024}, 1),
            _row(label, "library listen(after=...) -> first event p50 (ms)", {"ours": library_p[0]}, 1),
            _row(label, "library listen(after=...) -> first event p99 (ms)", {"ours": library_p[1]}, 1),
        ]
    return rows


def _percentiles(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


# 7. Read path: memory with slow readers


async def slowread(bench: Bench) -> list[Row]:
    """Server RSS while slow gRPC readers fall far behind a big run; then after many runs with a big `begin`."""
    s = bench.sizes
    n, kb = s.slow_entries, s.big_entry_bytes / 1000
    pace = f"{s.slow_readers} gRPC Listen reading 1 event / {s.slow_interval * 1000:g} ms"
    following = f"slow readers (ours): {pace}, from the begin of a run writing {n:,} entries x {kb:g} kB at once"
    late = f"slow readers (ours): {pace}, joining that run once finished, from its begin"
    await bench.redis.reset()
    progress(f"slow readers: ours, {s.slow_readers} readers, {n} entries x {s.big_entry_bytes} B")
    rows = []
    async with (
        grpc_side.our_server(bench) as server,
        grpc_side.clients(server.target, s.slow_readers, per_channel=1) as clients,
    ):
        await grpc_side.warm_up(clients[0])
        writer = await bench.start_worker("ours", "bulk-write", stdin=True, entries=n, size=s.big_entry_bytes)
        await writer.wait_line(WORKER_READY, timeout=s.worker_timeout)
        before = rss_kib(server.pid)
        reset_peak_rss(server.pid)
        begun = [asyncio.Event() for _ in clients]
        readers = [
            asyncio.create_task(grpc_side.read_to_end(client, "bulk", interval=s.slow_interval, begun=event))
            for client, event in zip(clients, begun, strict=True)
        ]
        await grpc_side.all_set(begun, readers, timeout=60)
        await _go(writer)
        started = time.perf_counter()
        written = await output(writer, s.worker_timeout)
        await bench.procs.stop(writer)
        rows += [
            _row(following, "server RSS before (MiB)", {"ours": before / 1024}, 1),
            _row(following, "run's write time (s)", {"ours": written["seconds"]}, 1),
            *await _slow_readings(bench, server, following, readers, started),
        ]
        reset_peak_rss(server.pid)
        started = time.perf_counter()
        readers = [
            asyncio.create_task(grpc_side.read_to_end(client, "bulk", interval=s.slow_interval)) for client in clients
        ]
        rows += await _slow_readings(bench, server, late, readers, started)
    return rows + await _big_prompts(bench)


async def _slow_readings(
    bench: Bench, server: grpc_side.Server, label: str, readers: list[asyncio.Task[grpc_side.Reading]], started: float
) -> list[Row]:
    """Wait for the readers to end; the server's peak and final RSS, and whether each reader got everything."""
    try:
        async with asyncio.timeout(bench.sizes.worker_timeout):
            readings = await asyncio.gather(*readers)
    finally:
        for reader in readers:
            reader.cancel()
    elapsed = time.perf_counter() - started
    complete = sum(reading.complete(bench.sizes.slow_entries) for reading in readings)
    return [
        _row(label, "server RSS peak (MiB)", {"ours": rss_kib(server.pid, peak=True) / 1024}, 1),
        _row(label, "server RSS at the end (MiB)", {"ours": rss_kib(server.pid) / 1024}, 1),
        _row(label, "time until the last reader's end (s)", {"ours": elapsed}, 1),
        _row(label, f"readers that got every entry once, in order (of {len(readers)})", {"ours": complete}),
    ]


async def _big_prompts(bench: Bench) -> list[Row]:
    """Runs with a big prompt (so a big `begin`), each listened to its end; then the idle server's RSS."""
    s = bench.sizes
    runs, size, concurrency = s.big_prompt_runs, s.big_prompt_bytes, s.big_prompt_concurrency
    label = f"big prompts (ours): {runs} runs with a {size / 1e6:g} MB prompt, {concurrency} at a time, each listened"
    prompt = ("lorem ipsum " * (size // 12 + 1))[:size]
    await bench.redis.reset()
    progress(f"big prompts: ours, {runs} runs of {size} B")
    slots = asyncio.Semaphore(concurrency)
    async with grpc_side.our_server(bench) as server, grpc_side.clients(server.target, 1) as clients:
        await grpc_side.warm_up(clients[0])
        before = rss_kib(server.pid)
        reset_peak_rss(server.pid)

        async def one(i: int) -> bool:
            async with slots:
                begun = asyncio.Event()
                reader = asyncio.create_task(grpc_side.read_to_end(clients[0], f"b{i}", begun=begun))
                await clients[0].run(grpc_side.OK_AGENT, f"b{i}", prompt)
                return (await reader).ended

        async with asyncio.timeout(s.worker_timeout):
            ended = await asyncio.gather(*(one(i) for i in range(runs)))
        idle, peak = rss_kib(server.pid), rss_kib(server.pid, peak=True)
    return [
        _row(label, "server RSS before (MiB)", {"ours": before / 1024}, 1),
        _row(label, "server RSS peak (MiB)", {"ours": peak / 1024}, 1),
        _row(label, "server RSS once idle (MiB)", {"ours": idle / 1024}, 1),
        _row(label, f"runs listened to their end (of {runs})", {"ours": sum(ended)}),
    ]


# 8. The run queue


QUEUE_PROMPT = "hello"
QUEUE_WORKERS = (1, 2)
"""Worker processes draining the queue: one, then two."""

Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def queue(bench: Bench) -> list[Row]:
    """gRPC Runs an API-only server accepts per second; runs 1, then 2 worker processes start per second."""
    s = bench.sizes
    progress(f"queue: bare pydantic-ai, {s.queue_runs} runs of the same agent, 64 at a time, in this process")
    bare = await queue_ab.bare(s.queue_runs)
    label = f"queue: {s.queue_runs:,} runs of `bench.agents:ok`, pydantic-ai alone, 64 at a time (the ceiling)"
    rows = [
        _row(label, "bare pydantic-ai: runs/s", {"ours": bare["runs_per_s"]}),
        _row(label, "bare pydantic-ai: CPU ms / run", {"ours": bare["cpu_ms_per_run"]}, 2),
    ]
    await bench.redis.reset()
    progress(f"queue: ours, {s.queue_runs} runs")
    # Every run is in one scope, whose bound on runs waiting for a worker (default 1,000) must hold them all.
    bound = {"PYDANTIC_AI_STREAM_MAX_QUEUED_RUNS": str(s.queue_runs)}
    async with (
        grpc_side.our_server(bench, concurrency=0, settings=bound) as server,
        grpc_side.clients(server.target, s.queue_runs) as clients,
        contextlib.AsyncExitStack() as started,
    ):
        workers: list[Proc] = []
        for count in QUEUE_WORKERS:
            while len(workers) < count:
                process = grpc_side.queue_worker(bench, f"queue worker {len(workers) + 1}", s.queue_concurrency)
                workers.append(await started.enter_async_context(process))
            await _warm_up_queue(bench, clients[0], count)
            for worker in workers:
                worker.pause()  # until the queue holds every run
            session_ids = [f"q{count}-{i}" for i in range(s.queue_runs)]
            progress(f"queue: {s.queue_runs} gRPC Runs while no worker runs")
            accepted = await _fill_queue(bench, server, clients, session_ids)
            if count == QUEUE_WORKERS[0]:
                rows += _accepted_rows(bench, accepted)
            progress(f"queue: {count} worker process(es) drain it")
            drained = await _drain_queue(bench, workers, session_ids)
            progress(f"queue: {s.queue_light_runs} runs one at a time")
            light = await _one_at_a_time(bench, clients[0], [f"l{count}-{i}" for i in range(s.queue_light_runs)])
            rows += _queue_rows(bench, count, drained, light)
    return rows


async def _warm_up_queue(bench: Bench, client: StreamClient, workers: int) -> None:
    """Two runs per worker through the queue, each listened to its end: first runs are not measured."""
    session_ids = [f"warm-up-{workers}-{i}" for i in range(2 * workers)]
    async with asyncio.timeout(bench.sizes.worker_timeout):
        await asyncio.gather(*(client.run(grpc_side.OK_AGENT, session_id, QUEUE_PROMPT) for session_id in session_ids))
        readings = await asyncio.gather(*(grpc_side.read_to_end(client, session_id) for session_id in session_ids))
    if not all(reading.ended for reading in readings):
        raise RuntimeError("a warm-up run through the queue did not end")


async def _fill_queue(
    bench: Bench, server: grpc_side.Server, clients: list[StreamClient], session_ids: list[str]
) -> dict[str, Any]:
    """A gRPC `Run` per session, ramped: each call's latency, the wall time, the server's CPU."""
    sessions = [(clients[i % len(clients)], session_id) for i, session_id in enumerate(session_ids)]
    cpu, started = cpu_seconds(server.pid), time.perf_counter()
    async with asyncio.timeout(bench.sizes.worker_timeout):
        latencies = await grpc_side.run_ramped(sessions, grpc_side.OK_AGENT, QUEUE_PROMPT)
    return {
        "latencies_ms": latencies,
        "seconds": time.perf_counter() - started,
        "server_cpu_s": cpu_seconds(server.pid) - cpu,
    }


def _accepted_rows(bench: Bench, accepted: dict[str, Any]) -> list[Row]:
    s = bench.sizes
    label = (f"queue (ours): {s.queue_runs:,} gRPC Run to an API-only server (`--concurrency 0`), "
             f"{grpc_side.RAMP} at a time")  # fmt: skip
    latencies = accepted["latencies_ms"]
    p50, p99 = _percentiles(latencies)
    return [
        _row(label, "Run calls/s", {"ours": len(latencies) / accepted["seconds"]}),
        _row(label, "Run latency p50 (ms)", {"ours": p50}, 1),
        _row(label, "Run latency p99 (ms)", {"ours": p99}, 1),
        _row(label, "server CPU ms / Run", {"ours": accepted["server_cpu_s"] / len(latencies) * 1000}, 2),
    ]


async def _drain_queue(bench: Bench, workers: list[Proc], session_ids: list[str]) -> dict[str, Any]:
    """Resume the paused workers and wait for every run's `end`; when each started, from its stream's entry ids."""
    redis = bench.redis
    cpu, redis_cpu = sum(cpu_seconds(worker.pid) for worker in workers), await redis.cpu()
    seconds, micros = await redis.client.time()
    resumed_ms = seconds * 1000 + micros / 1000  # Redis's clock, which the entry ids carry
    for worker in workers:
        worker.resume()
    await _ended(bench, session_ids)
    worker_cpu_s = sum(cpu_seconds(worker.pid) for worker in workers) - cpu
    streams = await _streams(bench, session_ids)
    # A run's first token comes with its text part's start (a run that failed may have none).
    starts = [_entry_ms(entry_id) for entries in streams for entry_id, fields in entries if is_part_start(fields)]
    return {
        "drain_s": (max(starts) - resumed_ms) / 1000,
        # Every `begin` was written before the workers resumed: a run waited for them from then on.
        "waits_ms": [_entry_ms(entries[1][0]) - resumed_ms for entries in streams],
        "worker_cpu_s": worker_cpu_s,
        "redis_cpu_s": await redis.cpu() - redis_cpu,
        "errored": sum(any(fields[b"type"] == b"error" for _, fields in entries) for entries in streams),
    }


async def _one_at_a_time(bench: Bench, client: StreamClient, session_ids: list[str]) -> list[float]:
    """A gRPC `Run` per session, each once the previous run has ended: from its `begin` to the next entry (ms)."""
    for session_id in session_ids:
        await client.run(grpc_side.OK_AGENT, session_id, QUEUE_PROMPT)
        await _ended(bench, [session_id])
    return [_entry_ms(entries[1][0]) - _entry_ms(entries[0][0]) for entries in await _streams(bench, session_ids)]


async def _ended(bench: Bench, session_ids: list[str]) -> None:
    """Wait until each session's run has written its `end`."""
    keys = [_stream_key(session_id) for session_id in session_ids]
    await wait_for_entries(
        bench.redis.client, keys, lambda fields: fields[b"type"] == b"end", bench.sizes.worker_timeout
    )


async def _streams(bench: Bench, session_ids: list[str]) -> list[Entries]:
    """Every session's stream, in one round trip."""
    async with bench.redis.client.pipeline(transaction=False) as pipe:
        for session_id in session_ids:
            pipe.xrange(_stream_key(session_id))
        streams: list[Entries] = await pipe.execute()
    return streams


def _entry_ms(entry_id: bytes) -> int:
    """The Redis time (ms) an entry was added at: its id's first part."""
    return int(entry_id.split(b"-")[0])


def _queue_rows(bench: Bench, workers: int, drained: dict[str, Any], light: list[float]) -> list[Row]:
    s = bench.sizes
    n = s.queue_runs
    label = (f"queue (ours): {n:,} queued runs drained by {workers} `pydantic-ai-stream worker "
             f"--concurrency {s.queue_concurrency}`")  # fmt: skip
    light_label = f"queue (ours): {s.queue_light_runs} runs one at a time (each once the last one ended), same workers"
    waits, light_waits = _percentiles(drained["waits_ms"]), _percentiles(light)
    return [
        _row(label, "runs started/s (to each run's first token)", {"ours": n / drained["drain_s"]}),
        _row(label, "time to drain the queue (s)", {"ours": drained["drain_s"]}, 2),
        _row(label, "queue wait p50 (ms): workers resumed -> the run's first entry", {"ours": waits[0]}, 1),
        _row(label, "queue wait p99 (ms)", {"ours": waits[1]}, 1),
        _row(label, "worker CPU ms / run (all workers)", {"ours": drained["worker_cpu_s"] / n * 1000}, 2),
        _row(label, "Redis CPU ms / run", {"ours": drained["redis_cpu_s"] / n * 1000}, 2),
        _row(label, "runs that got an error event", {"ours": drained["errored"]}),
        _row(light_label, "queue wait p50 (ms): begin -> the run's next entry", {"ours": light_waits[0]}, 1),
        _row(light_label, "queue wait p99 (ms)", {"ours": light_waits[1]}, 1),
    ]


WORKLOADS: dict[str, Callable[[Bench], Awaitable[list[Row]]]] = {
    "write": write,
    "paced": paced,
    "cancel": cancel,
    "fanout": fanout,
    "footprint": footprint,
    "resume": resume,
    "slowread": slowread,
    "queue": queue,
    "recovery": durable.recovery,
    "checkpoint": durable.checkpoint,
    "backlog": durable.backlog,
    "telemetry": telemetry.telemetry,
    "capacity": capacity.capacity,
    "cores": cores.cores,
}
