"""What telemetry costs (ours only): the same runs, through the queue to an in-process worker, each with a
listener, with `Runtime(telemetry=None)` and with a `Telemetry` exporting spans and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import BlockingConnectionPool, Redis

from bench.suite import PREFIX, Bench, progress
from bench.table import Row
from bench.worker import SCOPE_ID, USER_ID
from pydantic_ai_stream import Entry, Runtime, SessionHandle, Settings, Telemetry
from pydantic_ai_stream._core.names import END, EVENT, ORIGIN_PYDANTIC_AI
from pydantic_ai_stream.server import Worker

STEP_TIMEOUT = 120.0
"""Longest wait for one round's runs to end."""
ROUNDS = 5
"""Rounds of each setting, alternating (off, on, off, on, ...): a drift of the machine hits both."""
HOOK_ENTRIES = 200_000
"""Entries passed through a listener's hook, with and without telemetry, for its cost alone."""
AGENT = "tokens"


class _Dropped(SpanExporter):
    """Takes every span and sends it nowhere: the SDK's work without a collector's."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _agent(tokens: int) -> Agent[Any, str]:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for i in range(tokens):
            yield f"t{i} "

    return Agent(FunctionModel(stream_function=stream))


@contextlib.asynccontextmanager
async def _telemetry(on: bool, exporter: _Dropped) -> AsyncIterator[Telemetry | None]:
    if not on:
        yield None
        return
    # Prometheus (its reader collects only when scraped) and spans to an exporter, as `serve --telemetry` would.
    async with Telemetry(metrics_port=0, span_exporters=[exporter]) as telemetry:
        yield telemetry


async def _round(bench: Bench, *, on: bool, index: int, exporter: _Dropped) -> dict[str, float]:
    """`telemetry_runs` runs of `telemetry_tokens` deltas, all submitted at once, each listened to its `end`."""
    s = bench.sizes
    agent = _agent(s.telemetry_tokens)
    await bench.redis.reset()
    async with (
        _telemetry(on, exporter) as telemetry,
        # A blocking pool, as the server's: many runs and listeners wait for a connection instead of failing.
        Redis.from_pool(BlockingConnectionPool.from_url(bench.redis.url, max_connections=20, timeout=None)) as client,
        Runtime(redis=client, settings=Settings(redis_prefix=PREFIX), telemetry=telemetry) as runtime,
        Worker(runtime=runtime, agents={AGENT: agent}, concurrency=s.telemetry_runs) as worker,
    ):
        handles = [
            SessionHandle.of(runtime, scope_id=SCOPE_ID, user_id=USER_ID, session_id=f"t{index}-{i}")
            for i in range(s.telemetry_runs)
        ]
        cpu, wall = time.process_time(), time.perf_counter()
        async with asyncio.timeout(STEP_TIMEOUT):
            for handle in handles:
                await handle.submit(agent=AGENT, body={"user_prompt": "go"})
            counts = await asyncio.gather(*(_listened(handle) for handle in handles))
            await worker.join()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    events = sum(counts)
    return {"cpu_us_per_event": cpu / events * 1e6, "wall_ms_per_run": wall / len(handles) * 1000, "events": events}


async def _listened(handle: SessionHandle) -> int:
    """Entries read from the run's `begin` to its `end`."""
    seen = 0
    async for entry in handle.listen_entries(wait=30, timeout=30):
        if entry is not None:
            seen += 1
            if entry.type == END:
                break
    return seen


async def _entries(n: int) -> AsyncIterator[list[Entry] | None]:
    """One entry at a time, as a listener that is never behind gets them."""
    now_ms = int(time.time() * 1000)
    for i in range(n):
        yield [Entry(id=f"{now_ms}-{i}", type=EVENT, origin=ORIGIN_PYDANTIC_AI, body={})]


async def _hook_us(on: bool) -> float:
    """CPU µs per entry a listener's entries take through `SessionHandle.listen_entries`' telemetry hook
    (on: `Telemetry.listening`: the delivery histogram, the open-streams gauge), or without it (off)."""
    async with Telemetry(metrics_port=0) as telemetry:
        started = time.process_time()
        entries = _entries(HOOK_ENTRIES)
        async for _ in telemetry.listening(entries) if on else entries:
            pass
        return (time.process_time() - started) / HOOK_ENTRIES * 1e6


async def telemetry(bench: Bench) -> list[Row]:
    """CPU per event and wall time per run with telemetry off and on (the bench process runs everything)."""
    s = bench.sizes
    label = f"telemetry: {s.telemetry_runs} runs at once x {s.telemetry_tokens} deltas, a listener each"
    progress(f"{label}: {ROUNDS} rounds off and on")
    exporter = _Dropped()
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    await _round(bench, on=True, index=-1, exporter=exporter)  # warm-up: imports, first runs
    for index in range(ROUNDS):
        for on in (False, True):
            results[on].append(await _round(bench, on=on, index=index, exporter=exporter))

    def median(on: bool, key: str) -> float:
        return statistics.median(result[key] for result in results[on])

    def spread(on: bool) -> str:
        values = sorted(result["cpu_us_per_event"] for result in results[on])
        return f"{values[0]:.0f}-{values[-1]:.0f}"

    off_cpu, on_cpu = median(False, "cpu_us_per_event"), median(True, "cpu_us_per_event")
    hook_off, hook_on = await _hook_us(False), await _hook_us(True)
    return [
        Row(label, "events per round", results[False][0]["events"]),
        Row(label, f"CPU µs / event, telemetry off (median of {ROUNDS}; range {spread(False)})", off_cpu, decimals=1),
        Row(label, f"CPU µs / event, telemetry on (median of {ROUNDS}; range {spread(True)})", on_cpu, decimals=1),
        Row(label, "CPU added by telemetry (%, medians)", (on_cpu / off_cpu - 1) * 100, decimals=1),
        Row(label, "wall ms / run, telemetry off (median)", median(False, "wall_ms_per_run"), decimals=1),
        Row(label, "wall ms / run, telemetry on (median)", median(True, "wall_ms_per_run"), decimals=1),
        Row(label, "spans exported per run (on)", exporter.spans / ((ROUNDS + 1) * s.telemetry_runs), decimals=1),
        Row(f"telemetry: a listener's hook alone, {HOOK_ENTRIES:,} entries", "CPU µs / entry, off (no hook)",
            hook_off, decimals=2),
        Row(f"telemetry: a listener's hook alone, {HOOK_ENTRIES:,} entries", "CPU µs / entry, on", hook_on,
            decimals=2),
    ]  # fmt: skip
