"""Runs in another OS process: cancelled from here, or killed with SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import RedisSession, Runtime, Settings, q
from support import CANCEL_WITHIN, SLOW_RENEWAL, Collector, ScopedDeps, has_text

WORKER = Path(__file__).with_name("worker.py")


@pytest.fixture
def worker(redis_url: str, settings: Settings, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    """The worker process; its lease TTL and renewal interval (1.5 and 0.3 s) may be given as the fixture's param."""
    ttl, renew = getattr(request, "param", (1.5, 0.3))
    env = {
        **os.environ,
        "PYDANTIC_AI_STREAM_REDIS_PREFIX": settings.redis_prefix,
        "PYDANTIC_AI_STREAM_LEASE_TTL": str(ttl),
        "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": str(renew),
    }
    proc = subprocess.Popen([sys.executable, str(WORKER), redis_url, "s1"], env=env, stdout=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.parametrize("worker", [(3 * SLOW_RENEWAL, SLOW_RENEWAL)], indirect=True)
async def test_cancel_from_another_process_stops_the_run(
    redis: Redis, worker: subprocess.Popen[str], runtime: Runtime
) -> None:
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"), wait=10)
    await listener.wait_for(has_text("working "), timeout=20)
    assert [s async for s in q(redis, 1, 1, runtime=runtime)] == [(1, 1, "s1")]

    started = time.monotonic()
    assert await ScopedDeps.on(runtime, user_id=1, session_id="s1").cancel() is True
    await listener.wait_for(lambda e: e["type"] == "end")
    assert time.monotonic() - started < CANCEL_WITHIN, "by Pub/Sub, not left to the next renewal"
    events = await listener.done()
    assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [("error", "canceled"), ("end", None)]
    assert worker.wait(10) == 3
    # The worker saved the partial conversation it had.
    session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    assert session.msgs[-1].parts[0].content == "working "  # type: ignore[union-attr]


async def test_a_killed_worker_leaves_no_zombie(redis: Redis, worker: subprocess.Popen[str], runtime: Runtime) -> None:
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id="s1"), wait=10)
    await listener.wait_for(has_text("working "), timeout=20)
    assert [s async for s in q(redis, 1, 1, runtime=runtime)] == [(1, 1, "s1")]

    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    worker.wait(10)
    # The lease runs out (1.5 s here, 3 s by default) and a listener ends the stream for the dead run.
    await listener.wait_for(lambda e: e["type"] == "end", timeout=10)
    assert time.monotonic() - killed < 1.5 + 1.5
    events = await listener.done()
    assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [("error", "run lost"), ("end", None)]
    assert [s async for s in q(redis, 1, 1, runtime=runtime)] == []
    assert not await ScopedDeps.on(runtime, user_id=1, session_id="s1").is_live()
    # A late joiner sees the same ending, and the session can run again.
    replay = [e async for e in ScopedDeps.on(runtime, user_id=1, session_id="s1").listen(serialize=False)]
    assert replay == events
    again = ScopedDeps.on(runtime, user_id=1, session_id="s1")
    await again.start()
    await again.stop()
