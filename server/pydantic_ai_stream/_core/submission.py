"""What submitting a run takes and answers: shared by admission (which decides), the run queue (which accepts)
and the session handle (which passes a submit on to admission)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

__all__ = ["BusyPolicy", "RunOptions", "Submitted"]

BusyPolicy = Literal["reject", "enqueue", "interrupt", "rollback"]
"""What a new run does on a session that has a queued or live run (see `SessionHandle.submit`)."""


class RunOptions(TypedDict, total=False):
    """A submit's options past its agent, for callers that pass them on (see `SessionHandle.submit`)."""

    body: Mapping[str, Any] | None
    options: Mapping[str, Any] | None
    run_id: str | None
    if_busy: BusyPolicy
    wait: float
    traceparent: str | None


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """A run accepted into the queue: its id and the id of its `begin` entry (`""` while it waits behind
    the session's run: its `begin` is written when it starts)."""

    run_id: str
    begin_event_id: str
    waiting: bool = False
    """It waits behind the session's run (`enqueue`) and starts when that one ends."""
