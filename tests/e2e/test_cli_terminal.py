"""The `pydantic-ai-stream` client commands on a terminal (a pseudo-terminal the test reads), against a running
server: `run` and `listen` rendered as the run streams, `ls` as a table; and unchanged output into pipes."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from collections.abc import AsyncIterator

import pytest
from grpc_agents import OPS_DROPS
from test_cli import _entries, _piped

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DIM_ITALIC = "\x1b[2;3m"  # how the thinking is styled


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    agents = {"stalling": "grpc_agents:stalling", "picky": "grpc_agents:picky", "ops": "grpc_agents:ops"}
    config = ServerSettings(redis_url=redis_url, port=0, agents=agents)
    async with running_server(config, settings=settings) as running:
        yield running


class Terminal:
    """A command whose stdout (and, with `typing`, stdin) is a pseudo-terminal: what it shows is read from the
    terminal's side, as a person would see it; its stderr is a pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc, self.master, self.shown = proc, master, b""
        self._closed = asyncio.Event()
        self._more = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    async def start(cls, server: RunningServer, *args: str, typing: bool = False) -> Terminal:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
        env |= {"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}  # wide enough for lines not to wrap
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pydantic_ai_stream", *args, "--target", f"127.0.0.1:{server.port}",
                stdin=slave if typing else asyncio.subprocess.DEVNULL, stdout=slave, stderr=asyncio.subprocess.PIPE,
                env=env,
            )  # fmt: skip
        finally:
            os.close(slave)
        return cls(proc, master)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every holder of the terminal's other side closed it
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            self._closed.set()
        self.shown += data
        self._more.set()

    def text(self) -> str:
        """What it showed, without its styles (and with the terminal's line ends as `\\n`)."""
        return _ANSI.sub("", self.shown.decode()).replace("\r\n", "\n")

    async def shows(self, text: str) -> str:
        """Waits until the terminal shows `text` (bounded by the test's timeout); what it showed so far."""
        while text not in self.text():
            assert not self._closed.is_set(), f"it ended without showing {text!r}:\n{self.text()}"
            self._more.clear()
            await self._more.wait()
        return self.text()

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    async def finished(self) -> tuple[int, str, str]:
        """Its exit code, what it showed, and its stderr, once it exited; killed if the test stops waiting."""
        try:
            assert self.proc.stderr is not None
            err = await self.proc.stderr.read()
            await self.proc.wait()
            await self._closed.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
        assert self.proc.returncode is not None
        return self.proc.returncode, self.text(), err.decode()


async def _shown(server: RunningServer, *args: str) -> tuple[int, str, str]:
    return await (await Terminal.start(server, *args)).finished()


def _in_order(shown: str, *pieces: str) -> None:
    """Each piece shows exactly once, and in this order."""
    for piece in pieces:
        assert shown.count(piece) == 1, f"{piece!r} shows {shown.count(piece)} times in:\n{shown}"
    at = [shown.index(piece) for piece in pieces]
    assert at == sorted(at), f"out of order in:\n{shown}"


async def test_run_shows_the_text_once_in_order_with_the_thinking_and_the_tool_calls(server: RunningServer) -> None:
    code, shown, err = await _shown(server, "run", "demo", "count these words please", "--session", "t1")
    assert code == 0, err
    events = await _entries(server, "t1")
    text = "".join(e["body"].get("content_delta") or e["body"].get("content") or "" for e in events
                   if e["body"].get("part_kind") == "text")  # fmt: skip
    assert text.startswith("You said 4 words")
    _in_order(
        shown,
        f"▶ demo · session t1 · run {events[0]['body']['run_id']}",
        "> count these words please",
        "The user said something; let me count its words first.",
        '→ count_words({"text": "count these words please"})',
        "← count_words: 4",
        text.rstrip(),
        "✓ done",
    )
    terminal = await Terminal.start(server, "run", "demo", "think", "--session", "t2")
    await terminal.finished()
    assert _DIM_ITALIC + "The user said something; " in terminal.shown.decode(), "thinking is dim and italic"


async def test_run_shows_a_retry_and_a_cancel(server: RunningServer) -> None:
    code, shown, err = await _shown(server, "run", "picky", "weather?", "--session", "t3")
    assert code == 0, err
    _in_order(shown, '→ get_weather({"city": "?"})', "↻ get_weather retry: no such city: ?", "Which city?", "✓ done")

    terminal = await Terminal.start(server, "run", "stalling", "go", "--session", "t4")
    await terminal.shows("thinking hard")
    assert (await _piped(server, "cancel", "t4"))[:2] == (0, "cancelled\n")
    code, shown, err = await terminal.finished()
    assert code == 1, err
    _in_order(shown, "thinking hard", "■ canceled")
    assert "✓ done" not in shown


async def test_run_asks_on_a_terminal_for_an_approval_and_a_result(server: RunningServer) -> None:
    OPS_DROPS.clear()
    terminal = await Terminal.start(server, "run", "ops", "clean up", "--session", "t5", typing=True)
    asked = await terminal.shows("approve? [y/N] ")
    _in_order(asked, "⏸ waits for input on 2 calls", '? drop_db({"name": "staging"})  approval · call c1')
    terminal.type("y")
    await terminal.shows("(JSON, or !retry MESSAGE): ")
    terminal.type('{"ack": true}')
    code, shown, err = await terminal.finished()
    assert code == 0, err
    _in_order(
        shown,
        '? page({"msg": "db"})  result · call c2',
        "· continued",
        "← drop_db: dropped staging",
        "done: drop_db=dropped staging; page={'ack': True}",
        "✓ done",
    )
    assert OPS_DROPS == ["staging"]


async def test_ls_shows_state_and_attempt_of_a_running_and_a_waiting_run(server: RunningServer) -> None:
    running = await Terminal.start(server, "run", "stalling", "go", "--session", "t6")
    await running.shows("thinking hard")
    code, shown, err = await _shown(server, "run", "ops", "clean up", "--session", "t7")
    assert code == 3, err
    assert "the run waits for input; answer it with:" in shown
    assert re.search(r"pydantic-ai-stream respond t7 --run \w+ --approve c1 --value c2=JSON", shown)

    code, shown, err = await _shown(server, "ls")
    assert code == 0, err
    header, *rows = [line.split() for line in shown.splitlines() if line.strip()]
    assert header == ["session", "agent", "state", "attempt", "run", "started", "age"]
    assert [row[:3] for row in rows] == [["t6", "stalling", "running"], ["t7", "ops", "waiting"]]
    assert (rows[0][3], rows[1][3:6]) == ("1", ["for", "input", "-"]), "attempt: 1 running, none waiting"
    assert all(re.fullmatch(r"\d+s", row[-1]) for row in rows), "begun seconds ago"

    code, out, err = await _piped(server, "ls", "--text")
    assert (code, out) == (0, "t6\nt7\n"), "--text: the ids"
    code, out, err = await _piped(server, "ls")  # into a pipe: JSON lines, as with --json
    assert (await _piped(server, "ls", "--json"))[1] == out
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(s["session_id"], s["agent"], s["state"], s["attempt"]) for s in listed] == [
        ("t6", "stalling", "running", 1),
        ("t7", "ops", "waiting_for_input", 0),
    ]
    assert all(s["started_unix_ms"] > 0 for s in listed)
    for session_id in ("t6", "t7"):
        assert (await _piped(server, "cancel", session_id))[:2] == (0, "cancelled\n")
    assert (await running.finished())[0] == 1


async def test_listen_on_a_terminal_renders_the_run_and_json_keeps_the_lines(server: RunningServer) -> None:
    assert (await _shown(server, "run", "picky", "weather?", "--session", "t8"))[0] == 0
    code, shown, err = await _shown(server, "listen", "t8")
    assert code == 0, err
    _in_order(shown, "▶ picky · session t8", "↻ get_weather retry: no such city: ?", "Which city?", "✓ done")
    piped = await _piped(server, "listen", "t8")
    code, shown, err = await _shown(server, "listen", "t8", "--json")
    assert (code, shown) == (0, piped[1]), "--json on a terminal: the lines of a pipe"
    code, out, err = await _piped(server, "run", "picky", "weather?", "--session", "t9", "--json")
    assert code == 0, err
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert (types[0], types[-1], len(types)) == ("begin", "end", len(await _entries(server, "t9"))), "the events"


async def test_listen_on_a_terminal_says_how_to_answer_a_waiting_run_and_follows_it_on(server: RunningServer) -> None:
    OPS_DROPS.clear()
    assert (await _piped(server, "run", "ops", "clean up", "--session", "t10"))[0] == 3
    async with StreamClient(f"127.0.0.1:{server.port}") as client:
        begin = await anext(aiter(client.listen("t10")))
    run_id = event_body(begin)["run_id"]
    terminal = await Terminal.start(server, "listen", "t10", "--after", begin.id)  # the `begin` not shown again
    await terminal.shows(f"pydantic-ai-stream respond t10 --run {run_id} --approve c1 --value c2=JSON")
    assert (await _piped(server, "respond", "t10", "--approve", "c1", "--value", "c2=1"))[:2] == (0, "continued\n")
    code, shown, err = await terminal.finished()
    assert code == 0, err
    for returned in ("← drop_db: dropped staging", "← page: 1"):  # the two returns, in either order
        _in_order(shown, "⏸ waits for input on 2 calls", returned, "✓ done")
    assert "▶ ops" not in shown
