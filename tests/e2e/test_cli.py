"""The `pydantic-ai-stream` client commands, as a user types them, against a running server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import pytest

from pydantic_ai_stream import Settings
from pydantic_ai_stream._serve import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.client import StreamClient


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(redis_url=redis_url, port=0, agents={"stalling": "grpc_agents:stalling"})
    async with running_server(config, settings=settings) as running:
        yield running


async def _cli(server: RunningServer, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pydantic_ai_stream", *args, "--target", f"127.0.0.1:{server.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_prints_the_answer_as_it_streams(server: RunningServer) -> None:
    code, out, err = await _cli(server, "run", "demo", "count these words please", "--session", "c1")
    assert code == 0, err
    assert out.startswith("You said 4 words")
    assert "[tool] count_words" in err
    assert "let me count its words" in err  # thinking goes to stderr
    code, out, _ = await _cli(server, "listen", "c1")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["type"] == "begin"
    assert lines[-1]["type"] == "end"
    code, out, _ = await _cli(server, "listen", "c1", "--after", lines[-2]["id"])
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["end"]


async def test_ls_and_cancel(server: RunningServer) -> None:
    running = asyncio.create_task(_cli(server, "run", "stalling", "go", "--session", "c2"))
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        async for event in client.listen("c2", wait_seconds=30):
            if event.content_delta == "hard ":
                break
    assert (await _cli(server, "ls"))[:2] == (0, "c2\n")
    assert (await _cli(server, "cancel", "c2"))[:2] == (0, "cancelled\n")
    code, out, err = await running
    assert code == 1
    assert out.startswith("thinking hard")
    assert "[error] canceled" in err
    assert (await _cli(server, "cancel", "c2"))[:2] == (1, "no live run\n")
    assert (await _cli(server, "ls"))[:2] == (0, "")


async def test_errors_are_one_line_with_the_status(server: RunningServer) -> None:
    code, _, err = await _cli(server, "run", "nope", "hi")
    assert code == 1
    assert err.startswith("error: NOT_FOUND: unknown agent 'nope'")
