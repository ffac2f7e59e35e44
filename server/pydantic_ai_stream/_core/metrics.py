"""`Metrics`: what the write, read and durable layers report (entries written, Redis errors, listeners, runs and
how each ended), as a protocol their owner fills in: `Telemetry` (the edges) or `NO_METRICS`, which does
nothing. The layers below the edges see only this, never the OpenTelemetry side."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .entry import Entry

__all__ = ["NO_METRICS", "Metrics", "NoMetrics", "Outcome", "RunReport"]

Outcome = Literal["finished", "failed", "cancelled", "lost", "handed_back", "waiting"]
"""How a run's execution ended here: `lost` (its lease was lost) is neither a cancel nor a crash; `waiting`: it
stopped for input (approvals, external tool results) and goes on, once answered, as another execution."""


@dataclass(eq=False, kw_only=True)
class RunReport:
    """One run's execution as its worker reports it: who it is, then (set before the run's block ends) how it
    ended."""

    agent: str
    run_id: str
    session_id: str
    attempt: int
    traceparent: str = ""
    """The caller's W3C trace the run continues (empty: none)."""
    outcome: Outcome = "failed"
    cancelled_at: float | None = None
    """When (`time.monotonic()`) a cancel reached this process, for a cancelled run's cancel latency."""


class Metrics(Protocol):
    """The reports of a process's parts; every method returns at once (no I/O on the caller's path)."""

    def written(self, count: int) -> None:
        """`count` entries were written to streams."""

    def redis_error(self, operation: str) -> None:
        """A Redis call of `operation` failed."""

    def redis_errors_of(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """Count a Redis error raised inside as one of `operation`."""

    def listening(self, batches: AsyncIterator[list[Entry] | None]) -> AsyncIterator[list[Entry] | None]:
        """The batches of entries of one listener (`None`: a heartbeat), counted while read."""

    def observe_queue(self, depth: Callable[[], Awaitable[int]] | None) -> None:
        """Report `depth()` as the queued runs (`None`: stop, its Redis client is closing)."""

    def traceparent(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """The W3C `traceparent` a queued run continues (the current span's, else the caller's in `metadata`)."""

    def run(self, report: RunReport) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Observe one run's execution inside the block; yields keyword arguments for `agent.iter()`. The block
        sets `report.outcome` before it ends."""


class NoMetrics:
    """`Metrics` that report nothing: what a runtime without telemetry hands its parts."""

    def written(self, count: int) -> None:
        pass

    def redis_error(self, operation: str) -> None:
        pass

    def redis_errors_of(self, operation: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def listening(self, batches: AsyncIterator[list[Entry] | None]) -> AsyncIterator[list[Entry] | None]:
        return batches

    def observe_queue(self, depth: Callable[[], Awaitable[int]] | None) -> None:
        pass

    def traceparent(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        return None

    def run(self, report: RunReport) -> contextlib.AbstractContextManager[dict[str, Any]]:
        return contextlib.nullcontext({})


NO_METRICS: Metrics = NoMetrics()
"""The one `NoMetrics`: it holds no state."""
