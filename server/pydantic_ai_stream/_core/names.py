"""Every name the stream's entries and Redis values share between Python and the Lua scripts, in one place.

The Lua scripts (`.lua` files loaded by `_store.scripts.LuaScript`) are written with `$NAME` placeholders
that `lua()` fills from here, so a name is spelled once.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template

__all__ = [
    "BEGIN",
    "CANCEL_MARK",
    "END",
    "ERROR",
    "EVENT",
    "INFO",
    "INPUT_EXPIRED",
    "INPUT_MARK",
    "INPUT_REQUIRED",
    "LUA_NAMES",
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
INPUT_MARK = "input:"
"""Prefix of a live flag whose run waits for answers to its deferred tool calls: `input:<run id>`."""

INPUT_REQUIRED = "input_required"
"""The `event` of the entry a run writes when it stops for approvals or external tool results."""
INPUT_EXPIRED = "input expired"
"""The `msg` of the `error` that ends a run whose wait for input passed its deadline."""


LUA_NAMES: Mapping[str, str] = {
    "BEGIN": BEGIN,
    "END": END,
    "ERROR": ERROR,
    "ORIGIN": ORIGIN_STREAM,
    "CANCEL": CANCEL_MARK,
    "QUEUED": QUEUED_MARK,
    "INPUT": INPUT_MARK,
    "INPUT_EXPIRED": INPUT_EXPIRED,
    "INPUT_REQUIRED": INPUT_REQUIRED,
    "EVENT": EVENT,
}
"""The names a script spells `$BEGIN`, `$END`, ...: each one's value, written as a Lua string literal."""


class _Placeholders(Template):
    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)?)"  # also `$OpenState.OPENED`: an enum's member


def lua(script: str, values: Mapping[str, str | int] | None = None) -> str:
    """`script` with the names of `LUA_NAMES` (`$BEGIN`, `$END`, `$QUEUED`, ...) as Lua string literals, and each
    of `values` (a string as a literal, a number as is); `$$` is a `$`."""
    filled: dict[str, str] = {name: _literal(value) for name, value in LUA_NAMES.items()}
    filled.update((name, _literal(value)) for name, value in (values or {}).items())
    return _Placeholders(script).substitute(filled)


def _literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(int(value))  # an IntEnum's member as its number
    if "'" in value or "\\" in value:
        raise ValueError(f"not a plain Lua string literal: {value!r}")
    return f"'{value}'"
