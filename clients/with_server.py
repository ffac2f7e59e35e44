"""Runs a command against a real pydantic-ai-stream server and a real Redis, started for it.

    python clients/with_server.py COMMAND [ARG...]

Starts a private `redis-server` on a free loopback port (or uses `REDIS_URL`), then
`python -m pydantic_ai_stream serve --port 0` hosting the demo agent and the e2e test agents
(tests/e2e/grpc_agents.py) with two static tokens. The command gets:

- PAIS_ADDRESS: the server's host:port (plaintext);
- PAIS_TOKEN: a token of user 1:1; PAIS_OTHER_TOKEN: a token of user 1:2.

Both processes are stopped afterwards; the exit status is the command's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
TOKEN, OTHER_TOKEN = "alice-token", "bob-token"
STARTUP_DEADLINE = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_line(stream: IO[str], pattern: str, what: str, echo: bool) -> re.Match[str]:
    """Reads `stream` until a line matches, then keeps draining it (echoing it to stderr if `echo`)."""
    found: list[re.Match[str]] = []
    seen: list[str] = []
    matched = threading.Event()

    def drain() -> None:
        for line in stream:
            if echo:
                sys.stderr.write(line)
            elif not found:
                seen.append(line)
            if not found and (match := re.search(pattern, line)):
                found.append(match)
                matched.set()
        matched.set()  # the stream closed: the process is gone

    threading.Thread(target=drain, daemon=True).start()
    if not matched.wait(STARTUP_DEADLINE) or not found:
        raise SystemExit(f"{what} did not start:\n{''.join(seen)}")
    return found[0]


@contextmanager
def _process(args: list[str], env: dict[str, str], pattern: str, what: str, echo: bool) -> Iterator[re.Match[str]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        yield _wait_for_line(proc.stdout, pattern, what, echo)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(command: list[str]) -> int:
    if not command:
        raise SystemExit(__doc__)
    env = dict(os.environ)
    with ExitStack() as stack:
        if "REDIS_URL" not in env:
            server = shutil.which("redis-server")
            if server is None:
                raise SystemExit("redis-server is not on PATH (or set REDIS_URL)")
            port = _free_port()
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pais-redis-"))
            redis_args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
            stack.enter_context(_process(redis_args, env, r"Ready to accept connections", "redis-server", False))
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        env["PYDANTIC_AI_STREAM_REDIS_PREFIX"] = f"clients{os.getpid()}"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests/e2e"), str(REPO / "tests"), env.get("PYTHONPATH", "")])
        serve = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", "0"]
        serve += ["--agent", "stalling=grpc_agents:stalling", "--agent", "weather=grpc_agents:weather"]
        serve += ["--agent", "echo=grpc_agents:echo", "--agent", "seeing_any=grpc_agents:seeing_any"]
        serve += ["--agent", "ops=grpc_agents:ops", "--agent", "oncall=grpc_agents:oncall"]
        serve += ["--token", f"{TOKEN}=1:1", "--token", f"{OTHER_TOKEN}=1:2"]
        serving = stack.enter_context(_process(serve, env, r"serving \S+ on (\S+:\d+) ", "serve", True))
        env.update(PAIS_ADDRESS=serving[1], PAIS_TOKEN=TOKEN, PAIS_OTHER_TOKEN=OTHER_TOKEN)
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
