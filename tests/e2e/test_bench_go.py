"""The bench's Go load generator (`bench/go/fanout`, built as `python -m bench --clients go` builds it) against
the fan-out's floor server (`bench/grpc_floor.py`): it opens every stream, waits for `go`, and times every token."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest
from bench.load import GO_OPEN, build_go
from bench.procs import SERVER_READY, Procs, output

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain")]

SESSIONS, LISTENERS, TOKENS = 4, 3, 5


async def test_go_load_times_every_token_of_every_stream(tmp_path: Path) -> None:
    program = await build_go(tmp_path)
    procs = Procs()
    try:
        floor = await procs.start(
            "floor", [sys.executable, "-m", "bench.grpc_floor", "aio", "--sessions", str(SESSIONS), "--listeners",
                      str(LISTENERS), "--tokens", str(TOKENS), "--interval", "0.05"], stdin=True, echo=False,
        )  # fmt: skip
        port = (await floor.wait_line(SERVER_READY, timeout=60))[1]
        load = await procs.start(
            "go clients", [str(program), "--target", f"127.0.0.1:{port}", "--sessions", str(SESSIONS), "--listeners",
                           str(LISTENERS), "--per-conn", "5", "--ramp", "5", "--wait-go", "--latencies"],
            stdin=True, echo=False,
        )  # fmt: skip
        await load.wait_line(f"{GO_OPEN} {SESSIONS * LISTENERS}$", timeout=60)
        for proc in (load, floor):
            assert proc.process.stdin is not None
            proc.process.stdin.write(b"go\n")
            await proc.process.stdin.drain()
        summary = await output(load, timeout=60)
    finally:
        await procs.aclose()

    tokens = SESSIONS * LISTENERS * TOKENS
    assert summary["streams"] == SESSIONS * LISTENERS
    assert summary["connections"] == 3  # 12 streams, 5 a connection
    assert (summary["errored"], summary["failed"], summary["errors"]) == (0, 0, [])
    assert summary["count"] == sum(summary["per_second"]) == len(summary["latencies_ms"]) == tokens
    assert len(summary["yield_latencies_ms"]) == tokens
    assert min(summary["yield_latencies_ms"]) >= 0  # sent before it arrived: the same clock as the floor's
    ranked = summary["latencies_ms"]  # sorted, rounded to the µs: p99 is its nearest-rank one
    assert summary["p99_ms"] == pytest.approx(ranked[math.ceil(0.99 * tokens) - 1], abs=1e-3)
    assert 0 <= summary["p50_ms"] <= summary["p99_ms"]
    assert summary["rate"] == pytest.approx(tokens / summary["seconds"])
    assert summary["cpu_s"] > 0
