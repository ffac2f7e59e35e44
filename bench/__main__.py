"""`python -m bench [all|WORKLOAD] [--quick|--full] [--skip-published]`: ours vs the published package, side by side.

Starts a private Redis, our server and the workers it needs, prints a markdown table on stdout
(progress on stderr) and stops everything it started, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import signal
import sys
import time
from importlib.metadata import version

from bench import load, published, workloads
from bench.procs import Procs, private_redis
from bench.suite import FULL, QUICK, Bench, progress
from bench.table import Table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("workload", nargs="?", default="all", choices=["all", *workloads.WORKLOADS])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small workloads, for a CI smoke run (minutes)")
    size.add_argument("--full", action="store_true", help="the full workloads (the default)")
    parser.add_argument("--skip-published", action="store_true", help="measure ours only (no published venv)")
    parser.add_argument(
        "--ours-python", default=sys.executable, metavar="PATH", help="run our server and workers with this interpreter"
    )
    parser.add_argument(
        "--clients", choices=load.CLIENTS, default="auto",
        help="the Listen streams of fanout and cores: Python in this process, or bench/go/fanout (auto: go if found)",
    )  # fmt: skip
    return parser


def _raise_fd_limit() -> None:
    """Fan-out holds a Redis connection per Listen stream: let the server and Redis open that many."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _run(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    published_python = None if args.skip_published else published.python()
    names = list(workloads.WORKLOADS) if args.workload == "all" else [args.workload]
    procs = Procs()
    with load.build_dir() as build_dir:  # removed once every process it started is stopped
        try:
            clients = await load.choose_clients(args.clients, build_dir)
            async with private_redis(procs) as redis:
                bench = Bench(procs=procs, redis=redis, sizes=QUICK if args.quick else FULL,
                              published_python=published_python, ours_python=args.ours_python,
                              go_program=clients.go_program)  # fmt: skip
                print(await _preamble(bench, clients), flush=True)
                table = Table()
                for name in names:
                    started = time.monotonic()
                    table.add(await workloads.WORKLOADS[name](bench))
                    progress(f"{name}: done in {time.monotonic() - started:.0f} s")
        finally:
            await procs.aclose()


async def _preamble(bench: Bench, clients: load.ClientChoice) -> str:
    ours = f"pydantic-ai-stream {version('pydantic-ai-stream')}"
    if bench.ours_python != sys.executable:
        ours += f" (server and workers: {bench.ours_python})"
    sides = f"{ours} vs 0.1.1" if bench.published_python else f"{ours} only (--skip-published)"
    return (
        f"{sides}, "
        f"{'quick' if bench.sizes is QUICK else 'full'} sizes; one machine: {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, CPython {platform.python_version()}, Redis {await bench.redis.version()} "
        f"on loopback, pydantic-ai-slim {version('pydantic-ai-slim')}, redis-py {version('redis')}; "
        f"Listen clients of fanout and cores: {clients.note}\n"
    )


def main() -> None:
    args = _parser().parse_args()
    _raise_fd_limit()
    started = time.monotonic()
    try:
        asyncio.run(_run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted; every process it started is stopped")
        sys.exit(130)
    progress(f"all done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
