"""Queue drain, A/B: the worker CPU per run and runs started/s of `pydantic-ai-stream worker` processes of
two (or more) interpreters, in alternating rounds on one private Redis (the measure of `bench queue`'s
drain, without its gRPC server: runs are submitted by this process through the library's run queue).

    .venv/bin/python -m bench.queue_ab --python /tmp/base/.venv/bin/python --python .venv/bin/python

Each round: a worker (`--concurrency 64`, hosting `bench.agents:ok`) is started, warmed up by two runs and
paused (SIGSTOP); N runs are queued; it resumes (SIGCONT) and drains them. Figures per round: the worker's
CPU (`/proc`) per run and runs started per second (Redis's clock: resume -> the last run's first entry after
`begin`). `--spy PREFIX` adds a round per side recorded with py-spy (raw, for flame graphs: `PREFIX-<side>.txt`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

from bench.grpc_side import HOSTED, OK_AGENT, _env
from bench.procs import QUEUE_WORKER_READY, Procs, private_redis
from bench.suite import PREFIX, cpu_seconds
from bench.worker import wait_for_entries
from pydantic_ai_stream._core.settings import Settings
from pydantic_ai_stream._core.submission import Submission
from pydantic_ai_stream._runtime.runtime import Runtime


async def _submit(runtime: Runtime, session_ids: list[str]) -> None:
    queue = runtime.queue
    for start in range(0, len(session_ids), 100):
        await asyncio.gather(
            *(
                queue.submit(
                    runtime.stream(runtime.keys(scope_id=1, user_id=1, session_id=session_id)),
                    Submission(agent=OK_AGENT, body={"user_prompt": "hello"}),
                )
                for session_id in session_ids[start : start + 100]
            )
        )


def _key(session_id: str) -> str:
    return f"{PREFIX}:1:1:{session_id}"


async def _round(
    procs: Procs, redis: Any, url: str, python: str, runs: int, tag: str, spy: str | None
) -> dict[str, float]:
    env = _env({"PYDANTIC_AI_STREAM_MAX_QUEUED_RUNS": str(runs + 10)})
    cmd = [python, "-m", "pydantic_ai_stream", "worker", *HOSTED, "--redis", url, "--concurrency", "64", "--grace", "0"]
    proc = await procs.start(f"worker {tag}", cmd, env=env, echo=False)
    settings = Settings(redis_prefix=PREFIX, max_queued_runs=runs + 10)
    try:
        await proc.wait_line(QUEUE_WORKER_READY, timeout=60)
        async with Runtime(redis=redis, settings=settings) as runtime:
            warm = [f"w{tag}-{i}" for i in range(2)]
            await _submit(runtime, warm)
            await wait_for_entries(redis, [_key(s) for s in warm], lambda f: f[b"type"] == b"end", 60)
            spying = None
            if spy:
                spying = await asyncio.create_subprocess_exec(
                    os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--format", "raw", "-o", spy,
                    "-p", str(proc.pid), "-r", "200", "--nonblocking", stdout=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                await asyncio.sleep(1)
            proc.pause()
            session_ids = [f"q{tag}-{i}" for i in range(runs)]
            await _submit(runtime, session_ids)
        cpu = cpu_seconds(proc.pid)
        seconds, micros = await redis.time()
        resumed_ms = seconds * 1000 + micros / 1000
        proc.resume()
        keys = [_key(s) for s in session_ids]
        await wait_for_entries(redis, keys, lambda f: f[b"type"] == b"end", 300)
        worker_cpu = cpu_seconds(proc.pid) - cpu
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.xrange(key, count=2)
            streams = await pipe.execute()
        last = max(int(entries[1][0].split(b"-")[0]) for entries in streams)
        if spying is not None and spying.returncode is None:
            spying.send_signal(2)
            await spying.wait()
        return {"cpu_ms_per_run": worker_cpu / runs * 1000, "runs_per_s": runs / ((last - resumed_ms) / 1000)}
    finally:
        await procs.stop(proc)


async def bare(runs: int) -> dict[str, float]:
    """The ceiling: the same agent run by pydantic-ai alone in this process, 64 at a time, no Redis."""
    from pydantic_ai import Agent

    from bench.agents import ok

    async def one() -> None:
        async with ok.iter("hello") as run:
            async for node in run:
                if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                    async with node.stream(run.ctx) as events:
                        async for _ in events:
                            pass

    await asyncio.gather(*(one() for _ in range(64)))  # warm-up
    cpu, started = time.process_time(), time.perf_counter()
    for start in range(0, runs, 64):
        await asyncio.gather(*(one() for _ in range(min(64, runs - start))))
    return {
        "cpu_ms_per_run": (time.process_time() - cpu) / runs * 1000,
        "runs_per_s": runs / (time.perf_counter() - started),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", action="append", required=True)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spy")
    parser.add_argument("--bare", action="store_true", help="each round, also bare pydantic-ai in this process")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {p: [] for p in [*args.python, *(["bare"] if args.bare else [])]}
    procs = Procs()
    try:
        async with private_redis(procs) as server:
            for r in range(args.rounds + bool(args.spy)):  # a round spied on is one more, not measured
                for i, python in enumerate(args.python):
                    await server.client.flushall()
                    spy = f"{args.spy}-{i}.txt" if r == args.rounds else None
                    load = os.getloadavg()[0]
                    result = await _round(procs, server.client, server.url, python, args.runs, f"{r}{i}", spy)
                    if spy is None:
                        results[python].append(result)
                    print(f"round {r} {python}: {json.dumps(result)} load {load:.2f}", file=sys.stderr, flush=True)
                if args.bare and r < args.rounds:
                    results["bare"].append(await bare(args.runs))
                    print(f"round {r} bare pydantic-ai: {json.dumps(results['bare'][-1])}", file=sys.stderr, flush=True)
    finally:
        await procs.aclose()
    for python, rows in results.items():
        medians = {k: round(statistics.median(row[k] for row in rows), 2) for k in rows[0]}
        print(python, json.dumps(medians))


if __name__ == "__main__":
    started = time.time()
    asyncio.run(main())
    print(f"{time.time() - started:.0f} s", file=sys.stderr)
