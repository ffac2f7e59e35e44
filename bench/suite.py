"""What every workload shares: the sizes, the private Redis, the worker processes of each side."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.procs import WORKER, WORKER_READY, Proc, Procs, RedisServer, output
from bench.published import PUBLISHED_VERSION

Side = Literal["ours", "published"]
SIDES: tuple[Side, ...] = ("ours", "published")
PREFIX = "bench"
"""Redis key prefix of every workload (Redis is emptied between measurements)."""


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: `FULL` for the figures, `QUICK` for a smoke run in CI."""

    write_tokens: int
    write_rounds: int
    """Rounds of each write workload, each timing it bare (the ceiling) and through the package."""
    many_runs: int
    many_tokens: int
    paced_runs: int
    paced_tokens: int
    grpc_paced_runs: int
    cancel_runs: int
    fanout_sessions: int
    fanout_listeners: int
    fanout_tokens: int
    fanout_interval: float
    fanout_sync_sessions: int
    """Sessions of the sync floor (`bench/grpc_floor.py sync`: a thread per stream)."""
    stalled_runs: int
    resume_entries: int
    resume_big_entries: int
    resumes: int
    big_resumes: int
    slow_entries: int
    slow_interval: float
    big_prompt_runs: int
    big_prompt_bytes: int
    queue_runs: int
    queue_light_runs: int
    """Runs sent one at a time (each once the previous one has ended): queue wait without a backlog."""
    recovery_kills: int
    """Workers killed mid-run, one at a time, per lease setting."""
    checkpoint_nodes: int
    """Nodes (model requests) of each run of the checkpoint workload: all but the last call a tool."""
    checkpoint_runs: int
    """Runs of each kind (through the queue, `run()`) per tool return size."""
    telemetry_runs: int
    """Runs at once in each round of the telemetry workload (off, then on)."""
    telemetry_tokens: int
    backlog_runs: int
    """Runs queued when a worker is killed (the backlog workload)."""
    backlog_other: int
    """Runs of one scope queued while another scope's runs are timed."""
    backlog_firsts: int
    """Runs of the other scope timed, one at a time."""
    capacity_tokens: int
    """Tokens of each run of a capacity probe (at 50/s)."""
    capacity_start: int
    """Runs of the first capacity probe; the search doubles them until delivery p99 breaks the SLO."""
    capacity_limit: int
    """Most runs a capacity probe starts."""
    capacity_repeats: int
    """Probes of each load, judged by their median p99."""
    worker_timeout: float
    paced_interval: float = 0.02  # 50 tokens/s
    paced_light_runs: int = 10
    """A load one process keeps up with: latency without queueing."""
    cancel_tokens: int = 200
    cancel_after_deltas: int = 10
    cancel_concurrency: int = 20
    memory_tokens: int = 200
    resume_entry_bytes: int = 150
    """About a token delta's entry."""
    big_entry_bytes: int = 50_000
    slow_readers: int = 10
    big_prompt_concurrency: int = 10
    queue_concurrency: int = 64
    """Runs each queue worker process executes at once (the worker's default)."""


FULL = Sizes(
    write_tokens=10_000, write_rounds=5, many_runs=100, many_tokens=1_000, paced_runs=1_000, paced_tokens=200,
    grpc_paced_runs=1_000, cancel_runs=200, fanout_sessions=1_000, fanout_listeners=10, fanout_tokens=8,
    fanout_interval=4.0, fanout_sync_sessions=100,
    stalled_runs=200, resume_entries=2_000, resume_big_entries=3_000, resumes=500, big_resumes=100, slow_entries=3_000,
    slow_interval=0.02, big_prompt_runs=200, big_prompt_bytes=3_500_000, queue_runs=3_000,
    queue_light_runs=200, recovery_kills=50, checkpoint_nodes=50, checkpoint_runs=10, telemetry_runs=20,
    telemetry_tokens=1_000, backlog_runs=2_000, backlog_other=1_000, backlog_firsts=20,
    capacity_tokens=150, capacity_start=50, capacity_limit=6_400, capacity_repeats=3, worker_timeout=900,
)  # fmt: skip
QUICK = Sizes(
    write_tokens=2_000, write_rounds=2, many_runs=10, many_tokens=200, paced_runs=50, paced_tokens=40,
    grpc_paced_runs=20, cancel_runs=20, fanout_sessions=20, fanout_listeners=5, fanout_tokens=5, fanout_interval=0.2,
    fanout_sync_sessions=20,
    stalled_runs=50, resume_entries=200, resume_big_entries=100, resumes=20, big_resumes=20, slow_entries=200,
    slow_interval=0.001, big_prompt_runs=10, big_prompt_bytes=1_000_000, queue_runs=100,
    queue_light_runs=20, recovery_kills=3, checkpoint_nodes=10, checkpoint_runs=3, telemetry_runs=10,
    telemetry_tokens=100, backlog_runs=100, backlog_other=100, backlog_firsts=3,
    capacity_tokens=20, capacity_start=10, capacity_limit=20, capacity_repeats=1, worker_timeout=120,
)  # fmt: skip


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """The running suite: its processes, its Redis, the sizes and each side's interpreter."""

    procs: Procs
    redis: RedisServer
    sizes: Sizes
    published_python: Path | None
    """`None` with `--skip-published`."""
    ours_python: str = sys.executable
    """Runs our server and ours' workers: another checkout's venv with `--ours-python` (before/after)."""
    go_program: Path | None = None
    """The Go load generator (`bench/load.py`) the Listen loads of fan-out and cores use; `None`: Python clients."""

    def sides(self) -> tuple[Side, ...]:
        return SIDES if self.published_python is not None else ("ours",)

    def python(self, side: Side) -> str:
        if side == "ours":
            return self.ours_python
        assert self.published_python is not None
        return str(self.published_python)

    async def start_worker(self, side: Side, workload: str, *, stdin: bool = False, **options: Any) -> Proc:
        """Start `bench/worker.py workload` with `side`'s interpreter; options become `--name value`."""
        flags = [part for name, value in options.items() for part in (f"--{name.replace('_', '-')}", str(value))]
        cmd = [self.python(side), str(WORKER), workload, "--redis", self.redis.url, "--prefix", PREFIX, *flags]
        env = {"PYTHONPATH": "", "PYTHONUNBUFFERED": "1"} if side == "published" else {}
        return await self.procs.start(f"{side} {workload}", cmd, env=env, stdin=stdin)

    async def worker(self, side: Side, workload: str, **options: Any) -> dict[str, Any]:
        """Run one worker alone on a freshly emptied Redis and return what it measured."""
        await self.redis.reset()
        progress(f"{workload}: {side} {options}")
        proc = await self.start_worker(side, workload, **options)
        result = await output(proc, self.sizes.worker_timeout)
        await self.procs.stop(proc)
        return _checked(side, result)

    async def both(self, workload: str, **options: Any) -> dict[Side, dict[str, Any]]:
        """`worker` for each side, one after the other."""
        return {side: await self.worker(side, workload, **options) for side in self.sides()}

    async def worker_pair(
        self, side: Side, waiting: tuple[str, dict[str, Any]], driving: tuple[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start the `waiting` worker, and once it is ready the `driving` one; both results."""
        await self.redis.reset()
        progress(f"{waiting[0]} + {driving[0]}: {side} {driving[1]}")
        first = await self.start_worker(side, waiting[0], **waiting[1])
        await first.wait_line(WORKER_READY, timeout=60)
        second = await self.start_worker(side, driving[0], **driving[1])
        driven = await output(second, self.sizes.worker_timeout)
        waited = await output(first, self.sizes.worker_timeout)
        for proc in (first, second):
            await self.procs.stop(proc)
        return _checked(side, driven), _checked(side, waited)


def _checked(side: Side, result: dict[str, Any]) -> dict[str, Any]:
    """`result`, after checking the worker ran the package it was meant to."""
    is_published = result["package_version"] == PUBLISHED_VERSION
    if is_published != (side == "published"):
        raise RuntimeError(f"the {side} worker imported pydantic-ai-stream {result['package_version']}")
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (`/proc/PID/stat`)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> None:
    """Start a process's peak RSS (`VmHWM`) afresh from its current RSS (`/proc/PID/clear_refs`)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def rss_kib(pid: int, *, peak: bool = False) -> int:
    """Resident set size of a process, now or its peak (`/proc/PID/status`: VmRSS, VmHWM)."""
    field = "VmHWM:" if peak else "VmRSS:"
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")
