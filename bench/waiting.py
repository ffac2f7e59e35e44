"""What a run waiting for input costs, and how fast an answer gets it going again (docs/waiting-runs.md).

    .venv/bin/python -m bench.waiting --runs 1000 --answers 200      # --quick: --runs 200 --answers 50

One process on a private Redis: a `Worker` runs `--runs` queued runs of an agent whose tool needs approval; each
run streams, stops for input and waits. Then it measures Redis memory per waiting run (`used_memory` over an
empty baseline), what the process holds meanwhile (runs executing, asyncio tasks, RSS growth), and for
`--answers` runs, one at a time, the time from `respond()` to the run's next event reaching a listener of its
stream (the continuation claimed by the worker, adopted, and its first event written and read). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests

from pydantic_ai_stream import Runtime, SessionHandle, Settings, ToolAnswer, live_sessions
from pydantic_ai_stream._core.entry import decode
from pydantic_ai_stream.server import Worker

from .procs import Procs, private_redis


async def _model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    if any(p.part_kind == "tool-return" for p in messages[-1].parts):
        yield "done"
        return
    yield "Dropping it. "
    yield {0: DeltaToolCall(name="drop_db", json_args='{"name": "staging"}', tool_call_id="c1")}


def _agent() -> Agent[None, str | DeferredToolRequests]:
    agent: Agent[None, str | DeferredToolRequests] = Agent(
        FunctionModel(stream_function=_model), output_type=[str, DeferredToolRequests]
    )

    @agent.tool_plain(requires_approval=True)
    def drop_db(name: str) -> str:
        return f"dropped {name}"

    return agent


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _all_waiting(runtime: Runtime, worker: Worker, runs: int, *, timeout: float = 600) -> None:
    """Until every run waits for input (listed so) and the worker executes none (polled: a benchmark's loop)."""
    deadline = time.monotonic() + timeout
    while True:
        active = await live_sessions(runtime, scope_id=1, user_id=1)
        if sum(run.waiting for run in active) == runs and not worker.running:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(run.waiting for run in active)} of {runs} runs wait after {timeout} s")
        await asyncio.sleep(0.05)


async def _last_id(handle: SessionHandle) -> str:
    last = await handle.runtime.redis.xrevrange(handle.keys.stream, count=1)
    return decode(last[0][0])


async def measure(runs: int, answers: int) -> dict[str, Any]:
    procs = Procs()
    try:
        return await _measure(procs, runs, answers)
    finally:
        await procs.aclose()


async def _measure(procs: Procs, runs: int, answers: int) -> dict[str, Any]:
    async with private_redis(procs) as redis_server:
        redis = redis_server.client
        await redis_server.reset()
        settings = Settings(redis_prefix="benchwait", max_queued_runs=runs + 10)
        async with Runtime(redis=redis, settings=settings) as runtime:
            handles = [SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=f"s{i}") for i in range(runs)]
            await runtime.queue.create_group()
            base_memory = int((await redis.info("memory"))["used_memory"])
            rss_before = _rss_mb()
            async with Worker(runtime=runtime, agents={"ops": _agent()}, concurrency=64) as worker:
                started = time.monotonic()
                submitted = [await h.submit(agent="ops", body={"user_prompt": "clean up"}) for h in handles]
                await _all_waiting(runtime, worker, runs)
                to_wait = time.monotonic() - started
                memory = int((await redis.info("memory"))["used_memory"]) - base_memory
                keys = handles[0].keys
                own = {
                    name: await redis.memory_usage(getattr(keys, name)) or 0
                    for name in ("stream", "live", "input", "msgs", "runs")
                }
                tasks = len(asyncio.all_tasks())
                executing = worker.running
                latencies = []
                for handle, run in list(zip(handles, submitted, strict=True))[:answers]:
                    after = await _last_id(handle)  # the `input_required` event
                    listening = handle.listen(after=after, serialize=False, timeout=60)
                    first = asyncio.ensure_future(anext(listening))  # type: ignore[arg-type]
                    await asyncio.sleep(0)  # the listener reads from the waiting event on
                    sent = time.monotonic()
                    await handle.respond(run.run_id, [ToolAnswer(tool_call_id="c1", approved=True)])
                    await first
                    latencies.append((time.monotonic() - sent) * 1000)
                    await listening.aclose()  # type: ignore[attr-defined]
        latencies.sort()
        return {
            "runs_waiting": runs,
            "seconds_to_all_waiting": round(to_wait, 2),
            "redis_bytes_per_waiting_run": round(memory / runs),
            "redis_bytes_of_one_sessions_own_keys": own,
            "worker_runs_executing_while_waiting": executing,
            "asyncio_tasks_while_waiting": tasks,
            "process_max_rss_growth_mb": round(_rss_mb() - rss_before, 1),
            "answers": len(latencies),
            "answer_to_next_event_ms_p50": round(statistics.median(latencies), 2),
            "answer_to_next_event_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="--runs 200 --answers 50")
    args = parser.parse_args()
    runs, answers = (200, 50) if args.quick else (args.runs, args.answers)
    json.dump(asyncio.run(measure(runs, min(answers, runs))), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
