"""`serve --processes N` and `worker --processes N`: N copies of the command, each a process of its own (its
own event loop, Redis pool and worker, so a machine's cores all work), the servers on one port.

The port is shared with SO_REUSEPORT (the kernel spreads connections over the processes), and only among
them: this process first binds it alone, which fails if any program holds it, then keeps it bound, shared,
until the last copy exited. SIGTERM or SIGINT here stops every copy gracefully; a copy that exits stops the
others (a process manager restarts the whole).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

__all__ = ["run_processes"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
"""`prctl` option: the signal a process gets when its parent dies."""


def run_processes(argv: Sequence[str], processes: int, *, host: str | None, port: int | None) -> int:
    """Run `pydantic-ai-stream <argv>` (each with `--processes 1`) in `processes` processes, on `port` of
    `host` shared among them (`None`: a worker, no port); the exit code of the first that failed, else 0."""
    argv, env = [*argv, "--processes", "1"], dict(os.environ)  # the last `--processes` counts: one each
    with _shared_port(host, port) as bound:
        if bound is not None:
            argv, env["PYDANTIC_AI_STREAM_REUSE_PORT"] = [*argv, "--port", str(bound)], "1"
        command = [sys.executable, "-m", "pydantic_ai_stream", *argv]
        children = [subprocess.Popen(command, env=env, preexec_fn=_stop_with_parent) for _ in range(processes)]
        logger.info("started %d processes: %s", processes, ", ".join(str(child.pid) for child in children))
        return _supervise(children)


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait for every child; a signal to stop, or a child that exits, stops the others (SIGTERM: gracefully)."""

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = 0
        running = {child.pid: child for child in children}
        while running:
            pid, status = os.wait()
            child = running.pop(pid, None)
            if child is None:
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            code = code or child.returncode
            stop()  # one copy is gone: the rest stop too
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_with_parent() -> None:
    """In a child before it starts: SIGTERM when this process dies (even by SIGKILL), so no copy outlives it
    holding the port (Linux; elsewhere a parent killed outright leaves them to the process manager)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def _shared_port(host: str | None, port: int | None) -> Iterator[int | None]:
    """The port (a free one for 0) bound with SO_REUSEPORT for the block: raises `ValueError` if a program
    holds it, shared or not."""
    if host is None or port is None:
        yield None
        return
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, socket.SOCK_STREAM) as alone:
        try:
            alone.bind(address)
        except OSError as e:
            raise ValueError(f"cannot bind {host}:{port}: {e.strerror}") from e
        bound: int = alone.getsockname()[1]
    with socket.socket(family, socket.SOCK_STREAM) as shared:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind((address[0], bound, *address[2:]))
        yield bound
