"""What submitting a run takes and answers: shared by admission (which decides), the run queue (which accepts)
and the session handle (which passes a submit on to admission)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .inputs import Attachment

__all__ = ["BusyPolicy", "RunOptions", "Submission", "Submitted"]

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
    context: Mapping[str, Any] | None
    attachments: Sequence[Attachment]


@dataclass(frozen=True, kw_only=True)
class Submission:
    """A run for the run queue to accept on a session (whose ids say its scope and user): what `submit` and
    `wait_behind` take."""

    agent: str
    body: Mapping[str, Any] | None = None
    """Its `begin`'s fields past the ids (e.g. `user_prompt`)."""
    options: Mapping[str, Any] | None = None
    """Keyword arguments for `agent.iter()` (JSON: e.g. `model_settings`)."""
    run_id: str | None = None
    """`None`: made when it is submitted."""
    traceparent: str | None = None
    """The W3C trace context its span continues."""
    context: Mapping[str, Any] | None = None
    """The request context its hosted agent's deps get (JSON, checked by admission)."""
    attachments: Sequence[Attachment] = ()
    """Files for the model after the prompt's text (checked by admission): stored once, apart from the job;
    its `begin` (`body`) carries their summary. A run that waited behind another has them stored already."""

    def waiting(self) -> dict[str, Any]:
        """The run as it waits behind the session's run (JSON; `of_waiting` reads it back)."""
        waiting: dict[str, Any] = {
            "run_id": self.run_id,
            "agent": self.agent,
            "body": dict(self.body or {}),
            "options": dict(self.options or {}),
        }
        if self.traceparent:
            waiting["traceparent"] = self.traceparent
        if self.context:
            waiting["context"] = dict(self.context)
        return waiting

    @classmethod
    def of_waiting(cls, waiting: Mapping[str, Any]) -> Submission:
        """The run `waiting` gave as it waited."""
        return cls(
            agent=waiting["agent"],
            body=waiting["body"],
            options=waiting["options"],
            run_id=waiting["run_id"],
            traceparent=waiting.get("traceparent"),
            context=waiting.get("context"),
        )


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """A run accepted into the queue: its id and the id of its `begin` entry (`""` while it waits behind
    the session's run: its `begin` is written when it starts)."""

    run_id: str
    begin_event_id: str
    waiting: bool = False
    """It waits behind the session's run (`enqueue`) and starts when that one ends."""
