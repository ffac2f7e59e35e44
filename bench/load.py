"""A Listen load on a server: Python streams in this process, or the Go load generator (`bench/go/fanout`).

`--clients go` (the default when `go` is found) builds `bench/go/fanout` once per bench run, in GOPATH mode
against Debian's Go packages as `clients/go/test` does, and runs it instead of this process's grpc.aio
streams: the clients share the server's cores, and Go's cost about half of Python's CPU a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench import grpc_side
from bench.procs import ROOT, output
from bench.suite import Bench, progress
from bench.worker import Pace
from pydantic_ai_stream.client import StreamClient

Clients = Literal["python", "go"]
CLIENTS = ("auto", "python", "go")
"""`--clients`: auto is go when the `go` toolchain is found (and the program builds), else python."""
GO_MODULE = "github.com/pydantic-ai-stream/pydantic-ai-stream"
GO_PACKAGE = f"{GO_MODULE}/bench/go/fanout"
GO_PATH = os.environ.get("PAIS_BENCH_GOPATH", "/usr/share/gocode")
"""Where grpc-go and protobuf-go are (Debian's golang-google-grpc-dev and golang-google-protobuf-dev)."""
GO_OPEN = "bench-go: open"
"""Printed by the Go program once every stream has its `begin`."""


@dataclass(frozen=True)
class ClientChoice:
    clients: Clients
    go_program: Path | None
    note: str
    """Why, for the table's preamble."""


async def choose_clients(requested: str, build_dir: Path) -> ClientChoice:
    """The clients `--clients` asks for: go builds the Go program into `build_dir` (a failure is an error);
    auto builds it if `go` is found and falls back to python, saying why, if it does not build."""
    if requested == "python":
        return ClientChoice("python", None, "Python grpc.aio streams in the bench process (--clients python)")
    if requested == "auto" and shutil.which("go") is None:
        return ClientChoice("python", None, "Python grpc.aio streams in the bench process (no `go` found)")
    try:
        program = await build_go(build_dir)
    except RuntimeError as e:
        if requested == "go":
            raise
        progress(f"the Go load generator did not build, using Python clients: {e}")
        return ClientChoice("python", None, "Python grpc.aio streams in the bench process (bench/go did not build)")
    how = "--clients go" if requested == "go" else "`go` found"
    return ClientChoice("go", program, f"the Go load generator bench/go/fanout ({how})")


async def build_go(build_dir: Path) -> Path:
    """`bench/go/fanout` built in GOPATH mode (offline) from this checkout's Go client and the system's Go packages."""
    if shutil.which("go") is None:
        raise RuntimeError("no `go` on PATH (Debian: apt-get install golang-go golang-google-grpc-dev ...)")
    gopath = build_dir / "gopath"
    source = gopath / "src" / GO_MODULE
    (source / "bench").mkdir(parents=True)
    shutil.copytree(ROOT / "clients" / "go", source / "clients" / "go")
    shutil.copytree(ROOT / "bench" / "go", source / "bench" / "go")
    program = build_dir / "fanout"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GO_PATH}", "GOFLAGS": ""}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "go", "build", "-o", str(program), GO_PACKAGE, env=env, cwd=build_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"go build {GO_PACKAGE} failed:\n{out.decode(errors='replace')}")
    progress(f"built the Go load generator in {time.monotonic() - started:.1f} s")
    return program


@contextlib.contextmanager
def build_dir() -> Iterator[Path]:
    """A directory for the Go program's build, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-go-") as tmp:
        yield Path(tmp)


def clients_label(bench: Bench) -> str:
    """Which clients a workload's table rows were measured with."""
    return "Go clients (bench/go/fanout)" if bench.go_program is not None else "Python clients in the bench process"


@dataclass(frozen=True)
class Load:
    """`sessions` x `listeners` Listen streams on sessions `<prefix><n>`; with `run` (agent, prompt), a gRPC
    `Run` of each session as its stream opens (one listener a session). Stream n goes over connection n % the
    connections, one per `per_channel` streams."""

    prefix: str
    sessions: int
    listeners: int = 1
    run: tuple[str, str] | None = None
    per_channel: int = grpc_side.STREAMS_PER_CHANNEL

    @property
    def streams(self) -> int:
        return self.sessions * self.listeners


Clock = Callable[[], Awaitable[None]]
"""Called as the load's clock starts; it may let the tokens flow (a `go` to their writer)."""


async def listen(bench: Bench, target: str, load: Load, clock: Clock, *, after_open: bool) -> dict[str, Any]:
    """Open the load's streams (`grpc_side.RAMP` at a time) and wait until each has its `end`, with the bench's
    clients (`bench.clients`). The clock starts with `clock()`: once every stream is open (`after_open`), or
    before the first opens. Returns every token's latencies (`latencies_ms` from due, `yield_latencies_ms`),
    `seconds` from the clock's start to the last `end`, the streams that got an `error` event (`errored`), the
    clients' CPU over those seconds (`client_cpu_s`: this process's, or the Go program's) and `clients`."""
    if load.run is not None and load.listeners != 1:
        raise ValueError("a load that runs its sessions listens once to each")
    if bench.go_program is None:
        return await _listen_python(bench, target, load, clock, after_open=after_open)
    return await _listen_go(bench, bench.go_program, target, load, clock, after_open=after_open)


async def _listen_python(bench: Bench, target: str, load: Load, clock: Clock, *, after_open: bool) -> dict[str, Any]:
    start = None
    if load.run is not None:
        agent, prompt = load.run

        async def start(client: StreamClient, session_id: str) -> None:
            await client.run(agent, session_id, prompt)

    async with (
        grpc_side.clients(target, load.streams, load.per_channel) as callers,
        grpc_side.Listeners(timeout=bench.sizes.worker_timeout) as listeners,
    ):
        sessions = [(callers[n % len(callers)], f"{load.prefix}{n // load.listeners}") for n in range(load.streams)]
        if not after_open:
            await clock()
        cpu, started = time.process_time(), time.perf_counter()
        await listeners.open(sessions, start)
        if after_open:
            await clock()
            cpu, started = time.process_time(), time.perf_counter()
        await listeners.finish()
        return {
            **listeners.delivery.result(),
            "seconds": time.perf_counter() - started,
            "errored": listeners.errored,
            "client_cpu_s": time.process_time() - cpu,
            "clients": "python",
        }


async def _listen_go(
    bench: Bench, program: Path, target: str, load: Load, clock: Clock, *, after_open: bool
) -> dict[str, Any]:
    timeout = bench.sizes.worker_timeout
    cmd = [str(program), "--target", target, "--prefix", load.prefix, "--sessions", str(load.sessions),
           "--listeners", str(load.listeners), "--per-conn", str(load.per_channel), "--ramp",
           str(grpc_side.RAMP), "--timeout", f"{timeout:.0f}s", "--latencies"]  # fmt: skip
    if load.run is not None:
        cmd += ["--agent", load.run[0], "--prompt", load.run[1]]
    if after_open:
        cmd.append("--wait-go")
    else:
        await clock()
    proc = await bench.procs.start("go clients", cmd, stdin=after_open, echo=False)
    try:
        if after_open:
            await proc.wait_line(GO_OPEN, timeout=timeout)
            await clock()
            assert proc.process.stdin is not None
            proc.process.stdin.write(b"go\n")
            await proc.process.stdin.drain()
        result = await output(proc, timeout)
    finally:
        await bench.procs.stop(proc)
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} of the Go program's Listen streams failed: {result['errors']}")
    return {
        **result,
        "latencies_ms": result.get("latencies_ms") or [],
        "yield_latencies_ms": result.get("yield_latencies_ms") or [],
        "client_cpu_s": result["cpu_s"],
        "clients": "go",
    }


async def paced(
    bench: Bench, runs: int, processes: int = 1, *, tokens: int | None = None, go: bool = False, connections: int = 1
) -> dict[str, Any]:
    """`runs` paced runs (of `tokens`; default the sizes') through gRPC `Run`, each listened to through `Listen`,
    on a server of `processes` processes: token latencies (from due and from yield), wall time, the server's,
    Redis's and the clients' CPU. `go`: with the bench's clients (`bench.go_program`), else Python's; over at
    least `connections` connections (each of them up to `grpc_side.STREAMS_PER_CHANNEL` streams)."""
    s = bench.sizes
    await bench.redis.reset()
    prompt = Pace(s.paced_tokens if tokens is None else tokens, s.paced_interval).prompt()
    if not go:
        bench = dataclasses.replace(bench, go_program=None)
    cpu: dict[str, float] = {}
    # Every run executes at once (the server executes 64 by default; the rest would wait in its queue).
    async with (
        grpc_side.our_server(bench, concurrency=runs, processes=processes) as server,
        grpc_side.clients(server.target, 1) as warming,
    ):
        await grpc_side.warm_up(warming[0])

        async def clock() -> None:
            cpu.update(server=server.cpu_seconds(), redis=await bench.redis.cpu())

        per_channel = min(grpc_side.STREAMS_PER_CHANNEL, math.ceil(runs / connections))
        paced_load = Load("g", runs, run=(grpc_side.AGENT, prompt), per_channel=per_channel)
        result = await listen(bench, server.target, paced_load, clock, after_open=False)
        return {
            **result,
            "server_cpu_s": server.cpu_seconds() - cpu["server"],
            "redis_cpu_s": await bench.redis.cpu() - cpu["redis"],
        }
