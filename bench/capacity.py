"""Capacity at an SLO: how many concurrent 50 tokens/s runs, a listener each, one process sustains while every
token reaches its listener within the SLO (delivery p99), found by search, for each side and for gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import grpc_side
from bench.suite import Bench, progress
from bench.table import Row, percentile

SLO_P99_MS = 100.0
"""Delivery p99 a load must keep to count as sustained."""

Probe = Callable[[int], Awaitable[dict[str, Any]]]
"""Runs a load of N concurrent runs; what it measured (`latencies_ms`, ...)."""


@dataclass(frozen=True)
class Found:
    """The largest load that kept the SLO, the smallest that broke it (`None`: none tried did), and each probe."""

    sustained: int
    broken: int | None
    probes: list[tuple[int, float]]
    """`(runs, delivery p99 ms)` in the order tried."""


async def search(probe: Probe, *, start: int, limit: int, precision: float = 0.1) -> Found:
    """Double the load from `start` until the SLO breaks (or `limit`), then bisect to within `precision`."""
    probes: list[tuple[int, float]] = []

    async def keeps(runs: int) -> bool:
        result = await probe(runs)
        p99 = percentile(result["latencies_ms"], 99) if result["latencies_ms"] else float("inf")
        probes.append((runs, p99))
        progress(f"capacity: {runs} runs -> delivery p99 {p99:.1f} ms")
        return p99 < SLO_P99_MS and not result.get("failed_runs") and not result.get("errored")

    sustained, broken = 0, None
    runs = start
    while runs <= limit:
        if not await keeps(runs):
            broken = runs
            break
        sustained, runs = runs, runs * 2
    while broken is not None and broken - sustained > max(1, int(sustained * precision)):
        middle = (sustained + broken) // 2
        if await keeps(middle):
            sustained = middle
        else:
            broken = middle
    return Found(sustained, broken, probes)


async def capacity(bench: Bench) -> list[Row]:
    """Runs at 50 tokens/s with a listener each that one process sustains at delivery p99 < 100 ms."""
    s = bench.sizes
    tokens, limit = s.capacity_tokens, s.capacity_limit
    label = f"capacity: runs x {tokens} tokens at 50/s, a listener each, delivery p99 < {SLO_P99_MS:.0f} ms"
    library: dict[str, Found] = {}
    for side in bench.sides():

        async def library_load(runs: int, side: Any = side) -> dict[str, Any]:
            return await bench.worker(side, "paced", runs=runs, tokens=tokens, interval=s.paced_interval)

        library[side] = await search(library_load, start=s.capacity_start, limit=limit)

    async def grpc_load(runs: int) -> dict[str, Any]:
        progress(f"paced via gRPC: ours, {runs} runs")
        return await grpc_side.paced(bench, runs, tokens=tokens)

    grpc = await search(grpc_load, start=s.capacity_start, limit=limit)
    ours, published = library["ours"], library.get("published")
    rows = [
        Row(label, "library `run()`: runs sustained", ours.sustained, published.sustained if published else None, 0),
        Row(label, "library: first load that broke it", ours.broken, published.broken if published else None, 0),
        Row(label, "gRPC Run + Listen (one server process): runs sustained", grpc.sustained, None, 0),
        Row(label, "gRPC: first load that broke it", grpc.broken, None, 0),
    ]
    for name, found in (("ours", ours), ("published", published), ("gRPC", grpc)):
        if found is not None:
            progress(f"capacity {name}: " + ", ".join(f"{runs} -> {p99:.0f} ms" for runs, p99 in found.probes))
    return rows
