"""The server as users run it: a `pydantic-ai-stream serve` process, replicas, SIGTERM, TLS."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import trustme
from redis.asyncio import Redis

from pydantic_ai_stream import Entry, Runtime, SessionHandle, Settings
from pydantic_ai_stream._durable.fleet import fleet_agents
from pydantic_ai_stream._edges.cli import main
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb

HERE = Path(__file__).parent


@contextmanager
def _process(
    command: list[str], env: dict[str, str], ready: str
) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """`command` started; yields it and the match of `ready` in its log once it logs it (killed on exit)."""
    env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # blocks until the process logs `ready` (or dies)
            if match := re.search(ready, line):
                yield proc, match
                return
        raise AssertionError(f"{command[3]} exited with {proc.wait()}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stderr.close()


@contextmanager
def serve_process(
    redis_url: str, prefix: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`pydantic-ai-stream serve` on a free port; yields the process and its port once it serves."""
    command = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", "0", *args]
    env = {**(env or {}), "REDIS_URL": redis_url, "PYDANTIC_AI_STREAM_REDIS_PREFIX": prefix}
    with _process(command, env, r"serving \S+ on \S+:(\d+) ") as (proc, match):
        yield proc, int(match.group(1))


async def _until(events: AsyncIterator[pb.Event], predicate: object) -> list[pb.Event]:
    seen = []
    async for event in events:
        seen.append(event)
        if predicate(event):  # type: ignore[operator]
            return seen
    raise AssertionError(f"stream ended early: {seen}")


async def test_sigterm_mid_run_hands_the_run_to_another_replica_after_the_grace(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    settings.lease_ttl, settings.lease_renew_interval = 1.5, 0.1  # leases a loaded machine still renews
    short = {"PYDANTIC_AI_STREAM_LEASE_TTL": "1.5", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1"}
    agent = ("--agent", "stalling=grpc_agents:stalling")
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        listening = handle.listen_entries(timeout=30)
        with serve_process(redis_url, settings.redis_prefix, *agent, "--grace", "0.5", env=short) as (proc, port):
            async with StreamClient(f"127.0.0.1:{port}") as client:
                await client.run("stalling", "s1", "go")
            await _until_entry(listening, lambda e: e.body.get("content_delta") == "hard ")
            with worker_process(redis_url, settings.redis_prefix, *agent, env=short):
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                marker = await _until_entry(listening, lambda e: e.body.get("event") == "resumed")
                assert marker.body["attempt"] == 2
                assert proc.wait(10) == 0
                assert 0.4 < time.monotonic() - signalled < 10
                await _until_entry(listening, lambda e: e.body.get("content_delta") == "hard ")  # the new attempt
                assert await handle.cancel()
                await _until_entry(listening, lambda e: e.type == "end")


async def _until_entry(entries: AsyncIterator[Entry | None], predicate: Callable[[Entry], bool]) -> Entry:
    async for entry in entries:
        if entry is not None and predicate(entry):
            return entry
    raise AssertionError("the stream ended early")


async def test_replicas_share_redis_run_on_one_listen_and_cancel_on_another(redis_url: str, settings: Settings) -> None:
    agent = ("--agent", "stalling=grpc_agents:stalling")
    with (
        serve_process(redis_url, settings.redis_prefix, *agent) as (_, port_a),
        serve_process(redis_url, settings.redis_prefix, *agent) as (_, port_b),
    ):
        async with StreamClient(f"127.0.0.1:{port_a}") as a, StreamClient(f"127.0.0.1:{port_b}") as b:
            await a.run("stalling", "s1", "go")
            listening = b.listen("s1")
            await _until(listening, lambda e: e.content_delta == "hard ")
            assert await b.list_active() == ["s1"]
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await b.run("stalling", "s1", "again")
            assert busy.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert await b.cancel("s1") is True
            rest = await _until(listening, lambda e: e.type == pb.EVENT_TYPE_END)
            assert event_body(rest[-2]) == {"msg": "canceled"}


async def test_serving_without_auth_off_loopback_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="without auth"):
        async with running_server(ServerSettings(redis_url=redis_url, host="0.0.0.0", port=0)):
            pass


def test_serve_logs_its_start_up_and_shutdown_at_info_and_warns_only_of_no_auth() -> None:
    """An embedded Redis and no tokens: what a first `serve` prints, which must not read as trouble."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYDANTIC_AI_STREAM_REDIS_URL")}
    command = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", "0", "--grace", "0"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        lines = []
        for line in proc.stderr:  # blocks until the process serves (or dies)
            lines.append(line)
            if line.startswith("serving ", line.find(": ") + 2):
                proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
    logged = re.findall(r" (INFO|WARNING) \S+: ([^:]*)", "".join(lines))
    assert logged == [
        ("WARNING", "no auth configured"),
        ("INFO", "no REDIS_URL given"),
        ("INFO", "serving pydantic_ai_stream.v1.AgentStreamService on 127.0.0.1"),
        ("INFO", "shutting down"),
    ], "".join(lines)


async def test_tls_and_mutual_tls(redis_url: str, tmp_path: Path, settings: Settings) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    server_cert.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    server_cert.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    client_cert = ca.issue_cert("client@example")
    config = ServerSettings(
        redis_url=redis_url,
        host="localhost",
        port=0,
        tls_cert=tmp_path / "server.pem",
        tls_key=tmp_path / "server.key",
        tls_client_ca=tmp_path / "ca.pem",
    )
    async with running_server(config, settings=settings) as server:
        target = f"localhost:{server.port}"
        pair = (client_cert.private_key_pem.bytes(), client_cert.cert_chain_pems[0].bytes())
        async with StreamClient(target, root_certificates=ca.cert_pem.bytes(), client_certificate=pair) as client:
            assert await client.list_active() == []
        async with StreamClient(target, root_certificates=ca.cert_pem.bytes()) as no_client_cert:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await no_client_cert.list_active(timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with StreamClient(target) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError):
                await plaintext.list_active(timeout=5)


@contextmanager
def worker_process(
    redis_url: str, prefix: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`pydantic-ai-stream worker`: executes queued runs, serves no port; yields it once it claims."""
    command = [sys.executable, "-m", "pydantic_ai_stream", "worker", "--redis", redis_url, *args]
    with _process(command, {**(env or {}), "PYDANTIC_AI_STREAM_REDIS_PREFIX": prefix}, "executing up to") as (proc, _):
        yield proc


async def test_an_api_replica_queues_runs_that_a_worker_process_executes(redis_url: str, settings: Settings) -> None:
    config = ServerSettings(redis_url=redis_url, port=0, concurrency=0)  # serves the API, executes nothing
    async with running_server(config, settings=settings) as api, StreamClient(f"127.0.0.1:{api.port}") as client:
        assert api.worker is None
        started = await client.run("demo", "s1", "hi")
        assert await client.list_active() == ["s1"], "queued counts as active"
        [queued] = (await client.stub.ListActive(pb.ListActiveRequest())).sessions
        assert (queued.session_id, queued.run_id, queued.state) == ("s1", started.run_id, pb.RUN_STATE_QUEUED)
        first = await _until(client.listen("s1"), lambda e: e.type == pb.EVENT_TYPE_BEGIN)
        assert first[0].id == started.begin_event_id
        with worker_process(redis_url, settings.redis_prefix, "--concurrency", "2", "--grace", "1") as worker:
            await _until(client.listen("s1"), lambda e: e.type == pb.EVENT_TYPE_EVENT)
            [running] = (await client.stub.ListActive(pb.ListActiveRequest())).sessions
            assert (running.run_id, running.state) == (started.run_id, pb.RUN_STATE_RUNNING)
            events = await _until(client.listen("s1"), lambda e: e.type == pb.EVENT_TYPE_END)
            assert [e.type_name for e in events if e.type != pb.EVENT_TYPE_EVENT] == ["begin", "end"]
            assert any(e.part_kind == pb.PART_KIND_TEXT for e in events), "the demo agent answered"
            assert await client.list_active() == []
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(10) == 0


async def _fleet_until(runtime: Runtime, agents: set[str], deadline: float) -> float:
    """Wait until the live workers advertise exactly `agents`; when they did."""
    while await fleet_agents(runtime) != agents:
        assert time.monotonic() < deadline, f"the fleet's agents are {await fleet_agents(runtime)}, not {agents}"
        await asyncio.sleep(0.01)
    return time.monotonic()


async def _not_found(call: Awaitable[object]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    return str(error.value.details())


async def test_an_api_only_server_runs_the_agents_its_worker_processes_host(
    redis: Redis, redis_url: str, settings: Settings
) -> None:
    config = ServerSettings(redis_url=redis_url, port=0, concurrency=0, demo=False)  # no agent of its own
    short = {"PYDANTIC_AI_STREAM_LEASE_TTL": "1", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.2"}
    agent = ("--no-demo", "--agent", "stalling=grpc_agents:stalling")
    async with (
        running_server(config, settings=settings) as api,
        StreamClient(f"127.0.0.1:{api.port}") as client,
        Runtime(redis=redis, settings=settings) as runtime,
    ):
        assert await _not_found(client.run("stalling", "s0", "go")) == "unknown agent 'stalling'; hosted: none"
        with worker_process(redis_url, settings.redis_prefix, *agent, env=short) as worker:
            await _fleet_until(runtime, {"stalling"}, deadline=time.monotonic() + 10)
            await client.run("stalling", "s1", "go")
            await _until(client.listen("s1"), lambda e: e.content_delta == "hard ")  # the worker runs it
            assert await _not_found(client.run("nobody", "s2", "go")) == "unknown agent 'nobody'; hosted: stalling"
            worker.kill()  # SIGKILL: its advertisement lapses with its lease
            killed = time.monotonic()
            assert await _fleet_until(runtime, set(), deadline=killed + 10) - killed < 1 + 2
        assert await _not_found(client.run("stalling", "s3", "go")) == "unknown agent 'stalling'; hosted: none"
        assert not await redis.exists(f"{settings.redis_prefix}::workers"), "the lapsed worker's field is gone"


async def test_a_server_executing_its_agents_advertises_them_until_it_stops(redis_url: str, settings: Settings) -> None:
    api_only = ServerSettings(redis_url=redis_url, port=0, concurrency=0, demo=False)
    async with (
        running_server(api_only, settings=settings) as api,
        StreamClient(f"127.0.0.1:{api.port}") as client,
        Runtime(redis=Redis.from_url(redis_url), settings=settings) as runtime,
    ):
        hosting = ServerSettings(redis_url=redis_url, port=0, concurrency=1)  # hosts `demo` and executes its runs
        async with running_server(hosting, settings=settings):
            await _fleet_until(runtime, {"demo"}, deadline=time.monotonic() + 10)
            await client.run("demo", "s1", "count these words")
            events = await _until(client.listen("s1"), lambda e: e.type == pb.EVENT_TYPE_END)
            assert any(e.part_kind == pb.PART_KIND_TEXT for e in events), "the demo agent answered"
            assert await _not_found(client.run("nobody", "s2", "go")) == "unknown agent 'nobody'; hosted: demo"
        # Stopped: withdrawn at once, not left to lapse.
        assert await _not_found(client.run("demo", "s3", "go")) == "unknown agent 'demo'; hosted: none"
        await runtime.redis.aclose()


async def test_a_worker_without_a_redis_url_is_refused() -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pydantic_ai_stream", "worker"],
        env={k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYDANTIC_AI_STREAM_REDIS_URL")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "a worker needs the Redis its servers use" in proc.stderr


def test_the_worker_help_claims_no_embedded_redis(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("worker", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    worker_help, serve_help = " ".join(capsys.readouterr().out.split()).split("usage: ")[1:]
    assert "default: REDIS_URL; required: a worker has no embedded Redis" in worker_help
    assert "else an embedded Redis" not in worker_help
    assert "default: REDIS_URL, else an embedded Redis" in serve_help
