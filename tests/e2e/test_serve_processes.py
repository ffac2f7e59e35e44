"""`serve --processes N`: N server processes on one port (SO_REUSEPORT), stopped together; a taken port still fails."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient

HERE = Path(__file__).parent
SERVING = re.compile(r"serving \S+ on \S+:(\d+) ")


@contextmanager
def _serving(redis_url: str, prefix: str, processes: int) -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    """`serve --processes N` on a free port; yields it, its port and its processes' pids once all of them serve."""
    command = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", "0", "--processes", str(processes),
               "--redis", redis_url, "--agent", "stalling=grpc_agents:stalling"]  # fmt: skip
    env = {**os.environ, "PYDANTIC_AI_STREAM_REDIS_PREFIX": prefix, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        ports = []
        for line in proc.stderr:  # blocks until every process logs that it serves (or the parent dies)
            if match := SERVING.search(line):
                ports.append(int(match[1]))
                if len(ports) == processes:
                    break
        assert len(ports) == processes, f"serving on {ports}, exit code {proc.poll()}"
        assert len(set(ports)) == 1, f"serving on {ports}"
        yield proc, ports[0], _children(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()  # its processes get SIGTERM: they stop with it
        proc.wait(30)
        proc.stderr.close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _established(pid: int, port: int) -> int:
    """TCP connections to `port` that the process `pid` holds (its sockets' inodes in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # gRPC binds 127.0.0.1 as an IPv4-mapped IPv6 address
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
                count += local_port == port and state == "01" and inode in inodes
    return count


async def test_two_processes_serve_one_port_and_stop_together_on_sigterm(redis_url: str, settings: Settings) -> None:
    with _serving(redis_url, settings.redis_prefix, 2) as (proc, port, pids):
        assert len(pids) == 2
        target = f"127.0.0.1:{port}"
        channels = [grpc.aio.insecure_channel(target, options=[("test.channel", i)]) for i in range(24)]
        try:
            stubs = [health_pb2_grpc.HealthStub(channel) for channel in channels]
            replies = await asyncio.gather(*(stub.Check(health_pb2.HealthCheckRequest(), timeout=10) for stub in stubs))
            assert {reply.status for reply in replies} == {health_pb2.HealthCheckResponse.SERVING}
            held = [_established(pid, port) for pid in pids]
            assert sum(held) == 24, f"connections per process: {held}"
            assert all(held), f"connections per process: {held}"
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        async with StreamClient(target) as client:  # a run through the shared port, executed by either
            await client.run("stalling", "s1", "go")
            async for event in client.listen("s1"):
                if event.content_delta == "hard ":
                    break
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "both processes exited"  # noqa: ASYNC240
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the closed connections' TIME_WAIT
        again.bind(("127.0.0.1", port))  # nobody holds the port any more


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_port_another_program_holds_is_refused(redis_url: str, processes: int) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would share it
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        command = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", str(port),
                   "--processes", str(processes), "--redis", redis_url]  # fmt: skip
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    refusal = "Failed to bind to address" if processes == 1 else "cannot bind"
    assert f"{refusal} 127.0.0.1:{port}" in done.stderr


async def test_processes_need_a_shared_redis() -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pydantic_ai_stream", "serve", "--processes", "2"],
        env={k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYDANTIC_AI_STREAM_REDIS_URL")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--processes needs the Redis they share" in done.stderr


async def test_its_processes_stop_when_it_is_killed(redis_url: str, settings: Settings) -> None:
    with _serving(redis_url, settings.redis_prefix, 2) as (proc, _, pids):
        proc.kill()
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "a process outlived the one that started it"
            await asyncio.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped by init, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
