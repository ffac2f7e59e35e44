"""Crash recovery: a run whose worker dies (kill -9), stalls past its lease (SIGSTOP) or is deployed away
(SIGTERM) is resumed by another worker; listeners see one stream with a `resumed` marker, and the run's
work is kept once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator

import pytest
from grpc_agents import PACED_TOKENS, paced
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart
from redis.asyncio import Redis
from test_grpc_process import worker_process

from pydantic_ai_stream import RedisSession, Runtime, SessionHandle, Settings
from pydantic_ai_stream._redis import Entry
from pydantic_ai_stream._worker import Worker

FULL_TEXT = "".join(f"t{i} " for i in range(PACED_TOKENS))


@pytest.fixture
def settings() -> Settings:
    """Short leases: a worker that stops showing is taken over in about a second and a half."""
    import uuid

    return Settings(redis_prefix=f"t{uuid.uuid4().hex[:12]}", lease_ttl=0.5, lease_renew_interval=0.1)


AGENT = ("--agent", "paced=grpc_agents:paced", "--no-demo", "--grace", "0.2")
SHORT_LEASES = {"PYDANTIC_AI_STREAM_LEASE_TTL": "0.5", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1"}


async def _until_text(entries: AsyncIterator[Entry | None], text: str) -> list[Entry]:
    seen = []
    async for entry in entries:
        if entry is not None:
            seen.append(entry)
            if text in (entry.body.get("content"), entry.body.get("content_delta")):
                return seen
    raise AssertionError(f"the stream ended before {text!r}")


def _text(entries: list[Entry]) -> str:
    return "".join(str(e.body.get("content", "")) + str(e.body.get("content_delta", "")) for e in entries)


async def _check_resumed_once(runtime: Runtime, entries: list[Entry]) -> None:
    markers = [i for i, e in enumerate(entries) if e.body.get("event") == "resumed"]
    assert len(markers) == 1, [e.body for e in entries]
    marker = entries[markers[0]]
    assert (marker.type, marker.origin, marker.body) == (
        "event",
        "pydantic-ai-stream",
        {"idx": 0, "event": "resumed", "attempt": 2},
    )
    assert [e.type for e in entries if e.type != "event"] == ["begin", "end"]
    assert _text(entries[markers[0] + 1 :]) == FULL_TEXT, "the resumed attempt redoes the interrupted node whole"
    session = RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=1, session_id="s1")
    await session.load()
    assert [type(m) for m in session.msgs] == [ModelRequest, ModelResponse], "the run's work is kept once"
    [part] = session.msgs[1].parts
    assert isinstance(part, TextPart)
    assert part.content == FULL_TEXT


@pytest.mark.parametrize("fault", ["kill", "pause", "deploy"])
async def test_a_run_whose_worker_dies_or_stalls_mid_answer_is_resumed_by_another(
    redis: Redis, redis_url: str, settings: Settings, fault: str
) -> None:
    async with Runtime(redis=redis, settings=settings) as runtime:
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="s1")
        with worker_process(redis_url, settings.redis_prefix, *AGENT, env=SHORT_LEASES) as first:
            await handle.submit(agent="paced", body={"user_prompt": "go"})
            listening = handle.listen_entries(timeout=30)
            seen = await _until_text(listening, "t5 ")
            signals = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "deploy": signal.SIGTERM}
            first.send_signal(signals[fault])
            if fault == "deploy":  # it stops claiming, gives its run 0.2 s, hands it back and exits
                assert await asyncio.to_thread(first.wait, 10) == 0
            async with Worker(runtime=runtime, agents={"paced": paced}):
                seen += [entry async for entry in listening if entry is not None]
                if fault == "pause":
                    first.send_signal(signal.SIGCONT)  # it comes back, finds its lease gone, writes nothing
                    await asyncio.wait_for(asyncio.to_thread(_logged, first, "lost its lease"), 10)
        entries = await runtime.stream(handle.keys).read_range(after="0-0", count=10_000)
        assert [e.id for e in seen] == [e.id for e in entries], "the listener got the stream as it is"
        await _check_resumed_once(runtime, entries)


def _logged(proc: subprocess.Popen[str], text: str) -> None:
    """Read the process's log until a line says `text`."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            return
    raise AssertionError(f"the process ended without logging {text!r}")
