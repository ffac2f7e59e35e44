"""Library-level benchmarks against a real Redis: write throughput of one run, and cancel latency."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic_ai import Agent
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis

from pydantic_ai_stream import AgxCanceledError, Deps, Session, run, settings


@dataclass
class BenchDeps(Deps):
    def get_scope_id(self) -> int:
        return 1


@dataclass
class NullSession(Session):
    async def load(self) -> None:
        pass

    async def save(self) -> None:
        pass


def _model(tokens: int, gate: asyncio.Event | None = None) -> FunctionModel:
    async def stream(messages: object, info: AgentInfo) -> AsyncIterator[str]:
        for i in range(tokens):
            yield f"t{i} "
        if gate is not None:
            await gate.wait()

    return FunctionModel(stream_function=stream)


async def _commands(redis: Redis) -> tuple[int, int]:
    """(commands Redis executed, including those inside scripts; script calls = our write round trips)."""
    stats = await redis.info("commandstats")
    total = sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict) and "calls" in v)
    return total, int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def write_throughput(redis: Redis, tokens: int) -> dict[str, float]:
    """One run streaming `tokens` text deltas as fast as the model yields them."""
    deps = BenchDeps(redis=redis, user_id=1, session_id="throughput")
    before = await _commands(redis)
    started = time.perf_counter()
    await run(NullSession(), Agent(_model(tokens)), "go", deps)
    elapsed = time.perf_counter() - started
    entries = await redis.xlen(deps.key())
    after = await _commands(redis)
    return {
        "events": entries,
        "seconds": elapsed,
        "events_per_s": entries / elapsed,
        "cmds_per_event": (after[0] - before[0]) / entries,
        "writes_per_event": (after[1] - before[1]) / entries,
    }


async def cancel_latency(redis: Redis, runs: int) -> dict[str, float]:
    """`runs` runs cancelled mid-stream: time from `cancel()` returning to a listener seeing `end`."""
    latencies = []
    for i in range(runs):
        deps = BenchDeps(redis=redis, user_id=1, session_id=f"cancel-{i}")
        task = asyncio.create_task(run(NullSession(), Agent(_model(3, asyncio.Event())), "go", deps))
        listener = BenchDeps(redis=redis, user_id=1, session_id=f"cancel-{i}").listen(serialize=False)
        async for event in listener:
            assert isinstance(event, dict)
            if event["body"].get("content_delta") == "t2 ":
                break
        await BenchDeps(redis=redis, user_id=1, session_id=f"cancel-{i}").cancel()
        cancelled = time.perf_counter()
        async for event in listener:
            assert isinstance(event, dict)
            if event["type"] == "end":
                latencies.append(time.perf_counter() - cancelled)
        with contextlib.suppress(AgxCanceledError):
            await task
    latencies.sort()
    return {
        "runs": runs,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


async def main(redis_url: str, *, quick: bool) -> None:
    settings.set_redis_prefix(f"bench{int(time.time())}")
    redis = Redis.from_url(redis_url)
    try:
        w = await write_throughput(redis, 1_000 if quick else 10_000)
        rate = f"{w['events_per_s']:,.0f} events/s"
        cmds = f"{w['writes_per_event']:.2f} write round trips/event ({w['cmds_per_event']:.2f} commands in Redis)"
        print(f"| one run, {w['events']:.0f} events | {rate} | {cmds} |")
        c = await cancel_latency(redis, 20 if quick else 200)
        workload = f"cancel -> listener sees end, {c['runs']:.0f} runs"
        print(f"| {workload} | p50 {c['p50_ms']:.1f} ms | p99 {c['p99_ms']:.1f} ms |")
    finally:
        await redis.aclose()
