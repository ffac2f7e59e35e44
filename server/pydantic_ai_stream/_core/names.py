"""Every name the stream's entries and Redis values share between Python and the Lua scripts, in one place.

The scripts in `store.py` are written with `$NAME` placeholders that `lua()` fills from here, so a name is
spelled once.
"""

from __future__ import annotations

from string import Template

__all__ = [
    "BEGIN",
    "CANCEL_MARK",
    "END",
    "ERROR",
    "EVENT",
    "INFO",
    "ORIGIN_PYDANTIC_AI",
    "ORIGIN_STREAM",
    "QUEUED_MARK",
    "RUN_LOST",
    "lua",
]

BEGIN = "begin"
"""Entry type: a run starts."""
EVENT = "event"
"""Entry type: an agent event."""
ERROR = "error"
"""Entry type: an error."""
INFO = "info"
"""Entry type: information."""
END = "end"
"""Entry type: the run is over; nothing follows in the stream."""

ORIGIN_STREAM = "pydantic-ai-stream"
"""Origin of the entries the runtime writes itself (`begin`, `end`, its own errors)."""
ORIGIN_PYDANTIC_AI = "pydantic-ai"
"""Origin of agent events."""

RUN_LOST = "run lost"
"""The `msg` of the `error` that ends a run whose process died (and no worker resumes it)."""

CANCEL_MARK = "cancel:"
"""Prefix of a live flag whose run was asked to stop: `cancel:<run id>`."""
QUEUED_MARK = "queued:"
"""Prefix of a live flag whose run waits in the run queue for a worker: `queued:<run id>`."""


def lua(script: str) -> str:
    """`script` with `$BEGIN`, `$END`, `$ERROR`, `$EVENT`, `$ORIGIN`, `$CANCEL`, `$QUEUED` as Lua string literals."""
    names = {
        "BEGIN": BEGIN,
        "END": END,
        "ERROR": ERROR,
        "ORIGIN": ORIGIN_STREAM,
        "CANCEL": CANCEL_MARK,
        "QUEUED": QUEUED_MARK,
        "EVENT": EVENT,
    }
    return Template(script).substitute({name: f"'{value}'" for name, value in names.items()})
