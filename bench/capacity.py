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
    probes: list[tuple[int, float, float | None]]
    """`(runs, delivery p99 ms, pace kept)` in the order tried."""

    def pace(self, runs: int) -> float | None:
        """The pace its runs kept at a load of `runs`: a lone run's time over their median time (`None`: not
        measured). A runtime whose writes hold its models back delivers late tokens with a low latency, measured
        from each token's making: the SLO alone does not show it, this does."""
        return next((pace for tried, _, pace in self.probes if tried == runs), None)


async def search(probe: Probe, *, start: int, limit: int, paced: bool, precision: float = 0.1) -> Found:
    """Double the load from `start` until the SLO breaks (or `limit`), then bisect to within `precision`;
    `paced`: the probe reports each run's time (`run_seconds`), compared with a lone run's."""
    probes: list[tuple[int, float, float | None]] = []
    alone = percentile((await probe(1))["run_seconds"], 50) if paced else None

    async def keeps(runs: int) -> bool:
        result = await probe(runs)
        latencies = result["latencies_ms"]
        p99 = percentile(latencies, 99) if latencies else float("inf")
        run_seconds = result.get("run_seconds")
        pace = alone / percentile(run_seconds, 50) if alone and run_seconds else None
        probes.append((runs, p99, pace))
        kept = "" if pace is None else f", runs at {pace:.0%} of a lone run's pace"
        progress(f"capacity: {runs} runs -> delivery p99 {p99:.1f} ms{kept}")
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

        library[side] = await search(library_load, start=s.capacity_start, limit=limit, paced=True)

    async def grpc_load(runs: int) -> dict[str, Any]:
        progress(f"paced via gRPC: ours, {runs} runs")
        return await grpc_side.paced(bench, runs, tokens=tokens)

    grpc = await search(grpc_load, start=s.capacity_start, limit=limit, paced=False)  # no per-run times
    ours, published = library["ours"], library.get("published")
    rows = [
        Row(label, "library `run()`: runs sustained", ours.sustained, published.sustained if published else None, 0),
        Row(label, "library: first load that broke it", ours.broken, published.broken if published else None, 0),
        Row(
            label,
            "library: pace its runs kept at the load it sustained (a lone run's time / theirs)",
            ours.pace(ours.sustained),
            published.pace(published.sustained) if published else None,
            2,
        ),
        Row(label, "gRPC Run + Listen (one server process): runs sustained", grpc.sustained, None, 0),
        Row(label, "gRPC: first load that broke it", grpc.broken, None, 0),
    ]
    for name, found in (("ours", ours), ("published", published), ("gRPC", grpc)):
        if found is not None:
            progress(f"capacity {name}: " + ", ".join(f"{runs} -> {p99:.0f} ms" for runs, p99, _ in found.probes))
    return rows
