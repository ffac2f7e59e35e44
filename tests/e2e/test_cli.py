"""The `pydantic-ai-stream` client commands, as a user types them, against a running server."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc_agents import OPS_DROPS

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    agents = {"stalling": "grpc_agents:stalling", "seeing_any": "grpc_agents:seeing_any", "ops": "grpc_agents:ops"}
    config = ServerSettings(redis_url=redis_url, port=0, agents=agents)
    async with running_server(config, settings=settings) as running:
        yield running


async def _start_cli(server: RunningServer, *args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pydantic_ai_stream", *args, "--target", f"127.0.0.1:{server.port}",
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _finished(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """Its exit code and output once it exits: bounded by the test's timeout, not a guess of its own (a busy
    machine takes many seconds to start one; a run ends only once the test cancelled it). Killed if the test
    stops waiting."""
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _cli(server: RunningServer, *args: str) -> tuple[int, str, str]:
    return await _finished(await _start_cli(server, *args))


async def _streaming(server: RunningServer, session_id: str) -> None:
    """Returns once the session's `stalling` run has streamed its tokens (it then waits until cancelled)."""
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        async for event in client.listen(session_id, wait_seconds=30):
            if event.content_delta == "hard ":
                break


async def test_run_prints_the_answer_as_it_streams(server: RunningServer) -> None:
    code, out, err = await _cli(server, "run", "--text", "demo", "count these words please", "--session", "c1")
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


async def test_run_into_a_pipe_prints_json_lines_as_listen_does(server: RunningServer) -> None:
    code, out, err = await _cli(server, "run", "demo", "count these words please", "--session", "c12")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert (lines[0]["type"], lines[-1]["type"]) == ("begin", "end")
    code, listened, _ = await _cli(server, "listen", "c12")
    assert [json.loads(line) for line in listened.splitlines()] == lines
    OPS_DROPS.clear()
    code, out, err = await _piped(server, "run", "ops", "clean up", "--session", "c13")
    assert code == 3, err  # it waits for input: its events so far, then how to answer on stderr
    assert json.loads(out.splitlines()[-1])["body"]["event"] == "input_required"
    assert "answer it with: pydantic-ai-stream respond c13" in err
    assert (await _cli(server, "cancel", "c13"))[:2] == (0, "cancelled\n")


async def test_run_sends_a_context_and_attached_files(server: RunningServer, tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(b"\x89PNG" + bytes(100))
    context = '{"locale": "fr"}'
    args = ("run", "--text", "seeing_any", "look", "--context", context, "--attach", str(tmp_path / "scan.png"))
    code, out, err = await _cli(server, *args)
    assert code == 0, err
    assert out.splitlines()[:3] == [
        'instructions=context {"locale": "fr"}',
        "text=look",
        "binary=image/png:104:scan.png",
    ]
    code, _, err = await _cli(server, "run", "--text", "seeing_any", "look", "--context", "[1]")
    assert code == 2
    assert "must be a JSON object" in err


async def test_ls_and_cancel(server: RunningServer) -> None:
    running = asyncio.create_task(_cli(server, "run", "--text", "stalling", "go", "--session", "c2"))
    await _streaming(server, "c2")
    assert (await _cli(server, "ls", "--text"))[:2] == (0, "c2\n")
    assert (await _cli(server, "cancel", "c2"))[:2] == (0, "cancelled\n")
    code, out, err = await running
    assert code == 1
    assert out.startswith("thinking hard")
    assert "[error] canceled" in err
    assert (await _cli(server, "cancel", "c2"))[:2] == (1, "no live run\n")
    assert (await _cli(server, "ls", "--text"))[:2] == (0, "")


async def test_errors_are_one_line_with_the_status(server: RunningServer) -> None:
    code, _, err = await _cli(server, "run", "--text", "nope", "hi")
    assert code == 1
    assert err.startswith("error: NOT_FOUND: unknown agent 'nope'")


async def test_run_if_busy_enqueue_waits_behind_the_sessions_run_then_prints_its_answer(server: RunningServer) -> None:
    running = asyncio.create_task(_cli(server, "run", "--text", "stalling", "go", "--session", "c3"))
    await _streaming(server, "c3")
    code, _, err = await _cli(server, "run", "--text", "demo", "hi", "--session", "c3")
    assert (code, err.splitlines()[-1]) == (1, "error: ALREADY_EXISTS: session 'c3' already has a live run")
    enqueued = await _start_cli(
        server, "run", "--text", "demo", "count these words please", "--session", "c3", "--if-busy", "enqueue"
    )
    assert enqueued.stderr is not None
    waiting = (await enqueued.stderr.readline()).decode()
    assert re.fullmatch(r"session c3 run \w+ waiting behind the session's run\n", waiting)
    assert (await _cli(server, "cancel", "c3"))[:2] == (0, "cancelled\n")
    code, out, err = await _finished(enqueued)
    assert code == 0, err
    assert out.startswith("You said 4 words")  # its own answer, not the cancelled run's
    assert "[tool] count_words" in err
    assert (await running)[0] == 1


async def test_run_if_busy_interrupt_cancels_the_sessions_run_then_prints_its_answer(server: RunningServer) -> None:
    running = asyncio.create_task(_cli(server, "run", "--text", "stalling", "go", "--session", "c4"))
    await _streaming(server, "c4")
    code, out, err = await _cli(
        server, "run", "--text", "demo", "count these words please", "--session", "c4", "--if-busy", "interrupt"
    )
    assert code == 0, err
    assert out.startswith("You said 4 words")
    code, out, err = await running
    assert code == 1
    assert out.startswith("thinking hard")
    assert "[error] canceled" in err


# Runs the command as `python -m pydantic_ai_stream` does, then says on stderr which of the packages that take
# a second to import it loaded.
_IMPORTS_PROBE = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: print('imported:', sorted({m.split('.')[0] for m in sys.modules} "
    "& {'pydantic_ai', 'redis', 'opentelemetry'}), file=sys.stderr)); "
    "runpy.run_module('pydantic_ai_stream', run_name='__main__', alter_sys=True)"
)


async def _cli_imports(server: RunningServer, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _IMPORTS_PROBE, *args, "--target", f"127.0.0.1:{server.port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return await _finished(proc)


async def test_ls_cancel_and_listen_start_without_importing_pydantic_ai_or_redis(server: RunningServer) -> None:
    """They start in a quarter of a second instead of one and more (pydantic-ai alone takes a second)."""
    running = asyncio.create_task(_cli(server, "run", "--text", "stalling", "go", "--session", "c6"))
    await _streaming(server, "c6")
    code, out, err = await _cli_imports(server, "ls", "--text")
    assert (code, out, err.splitlines()[-1]) == (0, "c6\n", "imported: []")
    code, out, err = await _cli_imports(server, "cancel", "c6")
    assert (code, out, err.splitlines()[-1]) == (0, "cancelled\n", "imported: []")
    assert (await running)[0] == 1
    code, out, err = await _cli_imports(server, "listen", "c6")
    assert (code, err.splitlines()[-1]) == (0, "imported: []")
    entries = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["body"].get("msg")) for e in entries[-2:]] == [("error", "canceled"), ("end", None)]


async def _piped(server: RunningServer, *args: str) -> tuple[int, str, str]:
    """The command with stdin a pipe that ends at once: not a terminal, as in a script."""
    proc = await _start_cli(server, *args, stdin=asyncio.subprocess.PIPE)
    return await _finished(proc)


async def _entries(server: RunningServer, session_id: str) -> list[dict[str, Any]]:
    code, out, err = await _cli(server, "listen", session_id)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def _returns(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each answered call's tool return (or retry prompt) as the stream carries it."""
    parts = [e["body"] for e in entries if e["body"].get("part_kind") in ("tool-return", "retry-prompt")]
    return {p["tool_call_id"]: p["content"] for p in parts}


async def test_run_asks_for_an_approval_and_a_result_on_a_terminal_then_prints_the_answer(
    server: RunningServer,
) -> None:
    OPS_DROPS.clear()
    terminal, stdin = pty.openpty()
    try:
        proc = await _start_cli(server, "run", "--text", "ops", "clean up", "--session", "c7", stdin=stdin)
        assert proc.stderr is not None
        asked = (await proc.stderr.readuntil(b"approve? [y/N] ")).decode()
        assert '[input] drop_db({"name": "staging"}) call c1' in asked
        os.write(terminal, b"y\n")
        asked = (await proc.stderr.readuntil(b"(JSON, or !retry MESSAGE): ")).decode()
        assert '[input] page({"msg": "db"}) call c2' in asked
        os.write(terminal, b"ack\n")  # not JSON: asked again
        assert "not JSON" in (await proc.stderr.readuntil(b"(JSON, or !retry MESSAGE): ")).decode()
        os.write(terminal, b'{"ack": true}\n')
        code, out, err = await _finished(proc)
    finally:
        os.close(terminal)
        os.close(stdin)
    assert code == 0, err
    assert out == "done: drop_db=dropped staging; page={'ack': True}\n"
    assert "[input] continued" in err
    assert OPS_DROPS == ["staging"], "the approved tool ran once"
    entries = await _entries(server, "c7")
    assert _returns(entries) == {"c1": "dropped staging", "c2": {"ack": True}}
    assert entries[-1]["type"] == "end"


async def test_run_without_a_terminal_leaves_the_run_waiting_for_respond(server: RunningServer) -> None:
    OPS_DROPS.clear()
    code, out, err = await _piped(server, "run", "--text", "ops", "clean up", "--session", "c8")
    assert code == 3, err
    [waiting] = [json.loads(line) for line in out.splitlines()]
    assert waiting["body"]["event"] == "input_required"
    calls = [(c["tool_call_id"], c["tool_name"], c["kind"]) for c in waiting["body"]["calls"]]
    assert calls == [("c1", "drop_db", "approval"), ("c2", "page", "external")]
    run_id = re.search(r"session c8 run (\w+)", err)[1]  # type: ignore[index]
    assert f"answer it with: pydantic-ai-stream respond c8 --run {run_id} --approve c1 --value c2=JSON" in err
    assert (await _cli(server, "ls", "--text"))[:2] == (0, "c8\n"), "still waiting"
    assert (await _cli(server, "respond", "c8", "--approve", "c1"))[:2] == (0, "held; still waiting on c2\n")
    code, out, err = await _cli(server, "respond", "c8", "--run", run_id, "--value", 'c2={"ack": true}')
    assert (code, out) == (0, "continued\n"), err
    entries = await _entries(server, "c8")
    assert _returns(entries) == {"c1": "dropped staging", "c2": {"ack": True}}
    assert entries[-1]["type"] == "end"
    assert OPS_DROPS == ["staging"]
    code, _, err = await _cli(server, "respond", "c8", "--run", run_id, "--deny", "c1")
    assert (code, err.splitlines()[-1].split(":")[:2]) == (1, ["error", " FAILED_PRECONDITION"])


async def test_run_approve_all_answers_the_approvals_and_respond_denies_and_retries(server: RunningServer) -> None:
    OPS_DROPS.clear()
    code, out, err = await _piped(server, "run", "--text", "ops", "clean up", "--session", "c9", "--approve-all")
    assert code == 3, err
    assert "[input] held; still waiting on c2" in err, "the approval was sent"
    assert re.search(r"answer it with: pydantic-ai-stream respond c9 --run \w+ --value c2=JSON\n", err)
    assert (await _cli(server, "respond", "c9", "--retry", "c2=pager down"))[:2] == (0, "continued\n")
    entries = await _entries(server, "c9")
    assert "pager down" in _returns(entries)["c2"]
    assert entries[-1]["type"] == "end"
    assert OPS_DROPS == ["staging"]

    code, out, err = await _piped(server, "run", "--text", "ops", "clean up", "--session", "c10")
    assert code == 3, err
    code, out, err = await _cli(server, "respond", "c10", "--deny", "c1=not on Fridays", "--retry", "c2=pager down")
    assert (code, out) == (0, "continued\n"), err
    assert "not on Fridays" in _returns(await _entries(server, "c10"))["c1"]
    assert OPS_DROPS == ["staging"], "the denied tool did not run"
    code, _, err = await _cli(server, "respond", "c10")
    assert code == 2
    assert "give at least one answer" in err


async def test_ctrl_c_at_a_prompt_leaves_the_run_waiting_and_says_how_to_answer_it(server: RunningServer) -> None:
    terminal, stdin = pty.openpty()
    try:
        proc = await _start_cli(server, "run", "--text", "ops", "clean up", "--session", "c11", stdin=stdin)
        assert proc.stderr is not None
        started = (await proc.stderr.readuntil(b"approve? [y/N] ")).decode()
        proc.send_signal(signal.SIGINT)
        code, _, err = await _finished(proc)
    finally:
        os.close(terminal)
        os.close(stdin)
    run_id = re.search(r"session c11 run (\w+)", started)[1]  # type: ignore[index]
    assert code == 130
    assert f"still waits for input; answer it with: pydantic-ai-stream respond c11 --run {run_id} --approve c1" in err
    assert "Traceback" not in err
    assert (await _cli(server, "ls", "--text"))[:2] == (0, "c11\n")
    assert (await _cli(server, "respond", "c11", "--approve", "c1", "--value", "c2=1"))[:2] == (0, "continued\n")
