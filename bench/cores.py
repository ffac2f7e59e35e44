"""`cores`: what a second process of `serve --processes N` adds on this machine's cores (ours only)."""

from __future__ import annotations

import statistics
from typing import Any

from bench import load
from bench.suite import Bench, progress
from bench.table import Row, percentile

PROCESSES = (1, 2)
ROUNDS = 2
CONNECTIONS = 16
"""Client connections of each round: SO_REUSEPORT spreads connections, not calls, over the server's processes (one
connection would put every Listen stream on one process)."""
"""Rounds of each process count, alternating (1, 2, 1, 2): the machine's other load falls on both alike."""


async def cores(bench: Bench) -> list[Row]:
    """gRPC paced runs, each listened to, on a server of 1, then 2 processes (`--processes`), in alternating
    rounds: medians of tokens/s delivered, delivery latency, server CPU (all its processes') and the clients' CPU
    per 1k tokens. The streams and runs are the bench's clients (`bench/load.py`: Go's when it has them), over
    `CONNECTIONS` connections."""
    s = bench.sizes
    runs = s.grpc_paced_runs
    rounds: dict[int, list[dict[str, float]]] = {n: [] for n in PROCESSES}
    for round_ in range(ROUNDS):
        for processes in PROCESSES:
            progress(f"cores: round {round_ + 1} of {ROUNDS}, {runs} paced runs via gRPC on {processes} process(es)")
            result = await load.paced(bench, runs, processes, go=True, connections=CONNECTIONS)
            rounds[processes].append(_figures(result))
    medians = {n: {k: statistics.median(r[k] for r in rounds[n]) for k in rounds[n][0]} for n in PROCESSES}
    rows, clients = [], load.clients_label(bench)
    for n in PROCESSES:
        label = (f"cores (ours): paced via gRPC Run + Listen, {runs:,} runs x {s.paced_tokens} tokens at 50/s, "
                 f"`serve --processes {n}`, {clients} over {CONNECTIONS} connections (median of {ROUNDS} "
                 "alternating rounds)")  # fmt: skip
        m = medians[n]
        rows += [
            Row(label, f"tokens/s delivered (demanded {runs / s.paced_interval:,.0f})", m["tokens_per_s"]),
            Row(label, "delivery p50 (ms, from due)", m["p50_ms"], decimals=1),
            Row(label, "delivery p99 (ms, from due)", m["p99_ms"], decimals=1),
            Row(label, "server CPU s / 1k tokens (all its processes)", m["cpu_per_1k"], decimals=3),
            Row(
                label,
                "the clients' CPU s / 1k tokens (the bench process's, or the Go program's)",
                m["client_cpu_per_1k"],
                decimals=3,
            ),
            Row(label, "streams that got an error event", m["errored"]),
        ]
    scaling = medians[2]["tokens_per_s"] / medians[1]["tokens_per_s"]
    rows.append(Row("cores (ours): 2 processes / 1", "tokens/s delivered, ratio", scaling, decimals=2))
    return rows


def _figures(result: dict[str, Any]) -> dict[str, float]:
    latencies = result["latencies_ms"]
    return {
        "tokens_per_s": len(latencies) / result["seconds"],
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_per_1k": result["server_cpu_s"] / len(latencies) * 1000,
        "client_cpu_per_1k": result["client_cpu_s"] / len(latencies) * 1000,
        "errored": result["errored"],
    }
