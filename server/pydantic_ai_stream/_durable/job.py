"""`Job`: a run in the run queue, as a worker claims it (see `queue.py`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._core.entry import decode

__all__ = ["Job", "queued_member"]


def queued_member(user_id: int, session_id: str, run_id: str) -> str:
    """A run in its scope's set of queued runs (ids cannot hold `:`)."""
    return f"{user_id}:{session_id}:{run_id}"


@dataclass(frozen=True, kw_only=True)
class Job:
    """A run for a worker to execute: whose session, which run, which agent, with what options."""

    scope_id: int
    user_id: int
    session_id: str
    run_id: str
    agent: str
    options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for `agent.iter()` (JSON: e.g. `model_settings`)."""
    continues: bool = False
    """The run goes on after its wait for input was answered (`respond.lua` adds this job again)."""
    traceparent: str = ""
    """The W3C trace context the run's span continues (`""`: none; jobs written before it have none)."""
    context: Mapping[str, Any] = field(default_factory=dict)
    """The request context the hosted agent's deps get (JSON; bounded at admission, so small)."""
    id: str = ""
    """The job's entry id in the queue (set once claimed)."""

    @property
    def member(self) -> str:
        """The run in its scope's queued set."""
        return queued_member(self.user_id, self.session_id, self.run_id)

    def fields(self) -> dict[str, str]:
        fields = {
            "scope_id": str(self.scope_id),
            "user_id": str(self.user_id),
            "session_id": self.session_id,
            "run_id": self.run_id,
            "agent": self.agent,
            "options": json.dumps(self.options, separators=(",", ":")),
        }
        if self.traceparent:
            fields["traceparent"] = self.traceparent
        if self.context:
            fields["context"] = json.dumps(self.context, ensure_ascii=False, separators=(",", ":"))
        if self.continues:
            fields["continues"] = "1"
        return fields

    @classmethod
    def from_fields(cls, entry_id: str, fields: Mapping[Any, Any]) -> Job:
        """A claimed job; raises `ValueError` (or `KeyError`) for an entry that is not one."""
        values = {decode(k): decode(v) for k, v in fields.items()}
        return cls(
            id=entry_id,
            scope_id=int(values["scope_id"]),
            user_id=int(values["user_id"]),
            session_id=values["session_id"],
            run_id=values["run_id"],
            agent=values["agent"],
            options=json.loads(values.get("options", "{}")),
            traceparent=values.get("traceparent", ""),
            context=json.loads(values.get("context", "{}")),
            continues=values.get("continues") == "1",
        )
