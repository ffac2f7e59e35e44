"""The results table (markdown, on stdout, a row as soon as it is measured) and the statistics in it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Row:
    """One figure of one workload: ours, the published package's (`None`: not measured), and their ratio."""

    workload: str
    figure: str
    ours: float | None
    published: float | None = None
    decimals: int = 0

    def cells(self) -> list[str]:
        ratio = ""
        if self.ours is not None and self.published:
            ratio = f"{self.ours / self.published:.3g}"
        return [self.figure, self._number(self.ours), self._number(self.published), ratio]

    def _number(self, value: float | None) -> str:
        return "—" if value is None else f"{value:,.{self.decimals}f}"


class Table:
    """Prints the header once, then rows as they come; a workload is named on its first row only."""

    HEADER = "| workload | figure | ours | published 0.1.1 | ours / published |\n|---|---|--:|--:|--:|"

    def __init__(self) -> None:
        self._last_workload: str | None = None
        print(self.HEADER, flush=True)

    def add(self, rows: Sequence[Row]) -> None:
        for row in rows:
            workload = "" if row.workload == self._last_workload else row.workload
            self._last_workload = row.workload
            print("| " + " | ".join([workload, *row.cells()]) + " |", flush=True)
