"""A stream entry as listeners see it, and the rules of the cursor (an entry id) that resumes after it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from .names import BEGIN

__all__ = ["Entry", "StreamBounds", "decode", "entry_type", "stream_id_key", "trimmed_past"]


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

    def as_dict(self) -> dict[str, Any]:
        """`{"id", "type", "origin", "body"}`: what `Deps.listen(serialize=False)` yields."""
        return {"id": self.id, "type": self.type, "origin": self.origin, "body": self.body}

    @classmethod
    def from_redis(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> Entry:
        """Decode an `XREAD`/`XRANGE` entry; a missing `body` reads as `{}`."""
        decoded = {decode(k): decode(v) for k, v in fields.items()}
        body_json = decoded.get("body", "{}")
        return cls(
            id=decode(entry_id),
            type=decoded.get("type", ""),
            origin=decoded.get("origin", ""),
            body=json.loads(body_json),
            body_json=body_json,
        )


class StreamBounds(NamedTuple):
    """Where a stream starts and ends."""

    oldest: str
    oldest_type: str
    newest: str
    newest_type: str


def entry_type(fields: dict[Any, Any]) -> str:
    """An entry's `type`, its body left unparsed (it may be large)."""
    return next((decode(v) for k, v in fields.items() if decode(k) == "type"), "")


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id (`<ms>-<seq>`)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def trimmed_past(after: str, *, oldest: str, oldest_type: str) -> bool:
    """Whether entries after `after` (`0-0`: the run's `begin`) may be gone, the stream now starting at
    `oldest`: the one rule by which a cursor is expired."""
    if after == "0-0":
        return oldest_type != BEGIN
    return stream_id_key(oldest) > stream_id_key(after)
