"""Capacity at an SLO: how many concurrent 50 tokens/s runs, a listener each, one process sustains while every
token reaches its listener within the SLO (delivery p99, from each token's due time: the model keeps its pace
whatever its consumer does), found by search: first bare pydantic-ai (the ceiling), then each side, then gRPC."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import load
from bench.suite import Bench, progress
from bench.table import Row, percentile

SLO_P99_MS = 100.0
"""Delivery p99 (from each token's due time) a load must keep to count as sustained."""

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
        measured). A run's model keeps to its deadlines, so a run takes longer only when its tokens are consumed
        late (the SLO, from due, counts them too)."""
        return next((pace for tried, _, pace in self.probes if tried == runs), None)


async def search(
    probe: Probe, *, start: int, limit: int, paced: bool, precision: float = 0.1, repeats: int = 1
) -> Found:
    """Double the load from `start` until the SLO breaks (or `limit`), then bisect to within `precision`;
    each load is probed `repeats` times and judged by the median p99 (one probe's tail moves by tens of ms
    with whatever else the machine does); `paced`: the probe reports each run's time (`run_seconds`),
    compared with a lone run's."""
    probes: list[tuple[int, float, float | None]] = []
    alone = percentile((await probe(1))["run_seconds"], 50) if paced else None

    async def keeps(runs: int) -> bool:
        p99s, paces, failed = [], [], False
        for _ in range(repeats):
            result = await probe(runs)
            latencies = result["latencies_ms"]
            p99s.append(percentile(latencies, 99) if latencies else float("inf"))
            if alone and (run_seconds := result.get("run_seconds")):
                paces.append(alone / percentile(run_seconds, 50))
            failed = failed or bool(result.get("failed_runs") or result.get("errored"))
        p99, pace = statistics.median(p99s), statistics.median(paces) if paces else None
        probes.append((runs, p99, pace))
        kept = "" if pace is None else f", runs at {pace:.0%} of a lone run's pace"
        tried = ", ".join(f"{p:.0f}" for p in p99s)
        progress(f"capacity: {runs} runs -> delivery p99 {p99:.1f} ms from due (median of {tried}){kept}")
        return p99 < SLO_P99_MS and not failed

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
    """Runs at 50 tokens/s with a listener each that one process sustains at delivery p99 < 100 ms from due:
    bare pydantic-ai (each side's interpreter, no Redis: the ceiling), the library, gRPC."""
    s = bench.sizes
    tokens, limit = s.capacity_tokens, s.capacity_limit
    label = f"capacity: runs x {tokens} tokens at 50/s, a listener each, delivery p99 (from due) < {SLO_P99_MS:.0f} ms"
    found: dict[str, dict[str, Found]] = {"paced-bare": {}, "paced": {}}
    for workload, searches in found.items():
        for side in bench.sides():

            async def library_load(runs: int, side: Any = side, workload: str = workload) -> dict[str, Any]:
                return await bench.worker(side, workload, runs=runs, tokens=tokens, interval=s.paced_interval)

            searches[side] = await search(
                library_load, start=s.capacity_start, limit=limit, paced=True, repeats=s.capacity_repeats
            )

    async def grpc_load(runs: int) -> dict[str, Any]:
        progress(f"paced via gRPC: ours, {runs} runs")
        return await load.paced(bench, runs, tokens=tokens)

    grpc = await search(  # no per-run times
        grpc_load, start=s.capacity_start, limit=limit, paced=False, repeats=s.capacity_repeats
    )
    bare, library = found["paced-bare"], found["paced"]

    def pair(figure: str, value: Callable[[Found], float | None], searches: dict[str, Found], decimals: int) -> Row:
        published = searches.get("published")
        return Row(label, figure, value(searches["ours"]), value(published) if published else None, decimals)

    rows = [
        pair("bare pydantic-ai, one process (the ceiling): runs sustained", lambda f: f.sustained, bare, 0),
        pair("bare pydantic-ai: first load that broke it", lambda f: f.broken, bare, 0),
        pair("library `run()`: runs sustained", lambda f: f.sustained, library, 0),
        pair("library: first load that broke it", lambda f: f.broken, library, 0),
        pair("library: pace its runs kept at the load it sustained (a lone run's time / theirs)",
             lambda f: f.pace(f.sustained), library, 2),
        Row(label, "gRPC Run + Listen (one server process): runs sustained", grpc.sustained, None, 0),
        Row(label, "gRPC: first load that broke it", grpc.broken, None, 0),
    ]  # fmt: skip
    searched = [(f"{workload} {side}", f) for workload, searches in found.items() for side, f in searches.items()]
    for name, f in [*searched, ("gRPC", grpc)]:
        probes = (f"{runs} -> {p99:.0f} ms" + ("" if pace is None else f" {pace:.2f}") for runs, p99, pace in f.probes)
        progress(f"capacity {name} (runs -> p99 from due, pace kept): {', '.join(probes)}")
    return rows
