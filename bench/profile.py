"""Where one run's CPU per event goes: a run to profile, and py-spy's samples of it by category.

    .venv/bin/py-spy record -r 250 --format raw -o ours.txt -- \
        .venv/bin/python -m bench.profile run ours --tokens 40000 --redis redis://127.0.0.1:6379
    .venv/bin/python -m bench.profile categories ours.txt --cpu-us 91.2

`run` warms up, then times one run of `--tokens` deltas (`ours`: `run()` into Redis; `bare`: the same agent
iterated with nothing done to its events) and prints its CPU per event (`process_time`); `categories`
splits that CPU by the samples' innermost frame of a known category (imports and the warm-up left out).

`paced` times `--runs` concurrent runs of `--tokens` at `--interval` (`bench/worker.py paced`: `ours`, a
listener each; `bare`, the same runs iterated by pydantic-ai alone), with Python's default garbage collection or, with
`--gc tuned`, as `serve` and `worker` set it (`_edges/process.py`), and prints CPU per token and the part of
it spent collecting garbage (timed with `gc.callbacks`). py-spy charges a collection to whatever allocated
when it started, so split a `--gc tuned` run and take the collector's share from the default one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import time

RULES = (
    ("reader (`_read`: the hub, listeners)", ("pydantic_ai_stream/_read/", "listen_tokens")),
    ("mapping (`_core/events.py`)", ("pydantic_ai_stream/_core/events.py",)),
    ("JSON (`dump_body`)", ("(json/", "dump_body")),
    ("Redis client (redis-py, hiredis, the socket)", ("(redis/", "hiredis")),
    ("writer (`_write`, `_store`, deps, run loop)", ("pydantic_ai_stream/",)),
    ("model loop (pydantic-ai, anyio, the FunctionModel)", ("pydantic_ai/", "anyio/", "(pydantic/", "pydantic_core",
                                                          "bench/worker.py", "sniffio", "weakref")),
)  # fmt: skip
LOOP = "asyncio event loop (its own scheduling and I/O)"
SETUP = ("warm_up", "<frozen importlib", "_generate_schema", "_create_fn")


def categories(path: str) -> collections.Counter[str]:
    """Samples per category in a `py-spy record --format raw` file."""
    counts: collections.Counter[str] = collections.Counter()
    with open(path) as samples:
        for line in samples:
            stack, _, n = line.rstrip().rpartition(" ")
            if any(key in stack for key in SETUP):
                continue
            frames = reversed(stack.split(";"))
            hit = next((name for f in frames for name, keys in RULES if any(key in f for key in keys)), LOOP)
            counts[hit] += int(n)
    return counts


async def one_run(kind: str, tokens: int, url: str) -> None:
    from pydantic_ai import Agent

    from bench.worker import NullSession, Pace, bare_run, client, deps, paced_model, warm_up
    from pydantic_ai_stream import run, settings

    settings.set_redis_prefix("profile")
    redis = client(url)
    agent = Agent(paced_model())
    await warm_up(redis, agent)
    await bare_run(agent, Pace(tokens=5).prompt())
    prompt = Pace(tokens=tokens).prompt()
    wall, cpu = time.perf_counter(), time.process_time()
    if kind == "bare":
        await bare_run(agent, prompt)
    else:
        await run(NullSession(), agent, prompt, deps(redis, f"p{time.time_ns()}"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{kind}: {tokens / wall:,.0f} events/s, {cpu / tokens * 1e6:.1f} µs CPU / event", file=sys.stderr)


class CollectorClock:
    """CPU time the garbage collector spends, from `gc.callbacks`."""

    def __init__(self) -> None:
        self.seconds, self._started = 0.0, 0.0
        self.by_generation = [[0, 0.0] for _ in range(3)]
        """Per generation: collections, seconds."""
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            took = time.thread_time() - self._started
            self.seconds += took
            self.by_generation[info["generation"]][0] += 1
            self.by_generation[info["generation"]][1] += took


async def paced_runs(kind: str, runs: int, tokens: int, interval: float, url: str, collector: str) -> None:
    from bench import worker
    from pydantic_ai_stream import settings

    settings.set_redis_prefix(f"profile{time.time_ns()}")
    if collector == "tuned":  # as `_edges/process.py: collect_less` does (inlined: older checkouts lack it)
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
    clock = CollectorClock()
    cpu, wall = time.process_time(), time.perf_counter()
    await worker.paced(url, runs, tokens, interval, bare=kind == "bare")  # its warm-up counted: a short run
    wall, cpu, n = time.perf_counter() - wall, time.process_time() - cpu, runs * tokens
    print(
        f"{kind} paced, gc {collector}: {n / wall:,.0f} tokens/s, {cpu / n * 1e6:.0f} µs CPU / token, "
        f"of which collecting garbage {clock.seconds / n * 1e6:.0f} µs ("
        + ", ".join(f"gen {g}: {c} in {t:.2f} s" for g, (c, t) in enumerate(clock.by_generation))
        + ")",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_ = commands.add_parser("run")
    run_.add_argument("kind", choices=("ours", "bare"))
    run_.add_argument("--tokens", type=int, default=40_000)
    run_.add_argument("--redis", required=True, metavar="URL")
    paced = commands.add_parser("paced")
    paced.add_argument("kind", choices=("ours", "bare"))
    paced.add_argument("--runs", type=int, default=1_000)
    paced.add_argument("--tokens", type=int, default=60)
    paced.add_argument("--interval", type=float, default=0.02)
    paced.add_argument("--gc", choices=("default", "tuned"), default="default")
    paced.add_argument("--redis", required=True, metavar="URL")
    split = commands.add_parser("categories")
    split.add_argument("samples")
    split.add_argument("--cpu-us", type=float, required=True, help="the run's CPU per event")
    args = parser.parse_args()
    if args.command == "run":
        asyncio.run(one_run(args.kind, args.tokens, args.redis))
        return
    if args.command == "paced":
        asyncio.run(paced_runs(args.kind, args.runs, args.tokens, args.interval, args.redis, args.gc))
        return
    counts = categories(args.samples)
    total = sum(counts.values())
    for name, n in counts.most_common():
        print(f"| {name} | {n / total:.0%} | {n / total * args.cpu_us:.1f} |")


if __name__ == "__main__":
    main()
