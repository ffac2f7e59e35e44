"""A stream entry as listeners see it (its id is a `Cursor`), and where a stream starts and ends."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Entry", "StreamBounds", "decode", "entry_type"]


def decode(value: bytes | str) -> str:
    """A Redis reply as `str`, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as listeners see it; `id` is the resume cursor."""

    id: str
    type: str
    origin: str
    body: dict[str, Any]
    body_json: str = "{}"
    """`body` as the JSON it was stored as."""

    @property
    def size(self) -> int:
        """About the bytes it holds (its body dominates): what buffers and catch-up pages count."""
        return len(self.body_json) + 64

    def as_dict(self) -> dict[str, Any]:
        """`{"id", "type", "origin", "body"}`: what `Deps.listen(serialize=False)` yields."""
        return {"id": self.id, "type": self.type, "origin": self.origin, "body": self.body}

    @classmethod
    def from_redis(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> Entry:
        """Decode an `XREAD`/`XRANGE` entry; a missing `body` reads as `{}`."""
        decoded = {decode(k): decode(v) for k, v in fields.items()}
        type_, origin, body_json = decoded.get("type", ""), decoded.get("origin", ""), decoded.get("body", "{}")
        return cls.parse(decode(entry_id), type_, origin, body_json)

    @classmethod
    def parse(cls, entry_id: str, type_: str, origin: str, body_json: str) -> Entry:
        """An entry from its fields as stored (`body_json`: its body's JSON)."""
        return cls(id=entry_id, type=type_, origin=origin, body=json.loads(body_json), body_json=body_json)


class StreamBounds(NamedTuple):
    """Where a stream starts and ends."""

    oldest: str
    oldest_type: str
    newest: str
    newest_type: str


def entry_type(fields: dict[Any, Any]) -> str:
    """An entry's `type`, its body left unparsed (it may be large)."""
    return next((decode(v) for k, v in fields.items() if decode(k) == "type"), "")
