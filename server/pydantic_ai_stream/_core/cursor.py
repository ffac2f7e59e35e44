"""The resume cursor: the id of the last stream entry a reader has (`<ms>-<seq>`), which it reads after.

`Cursor` owns the value's parsing, its order and the one rule by which it expires (`trimmed_past`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from .entry import StreamBounds
from .errors import CursorAheadError, CursorExpiredError, InvalidIdError
from .keys import excerpt
from .names import BEGIN, END

__all__ = ["Cursor"]

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$|^0$")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a session's stream: a reader has every entry up to and including `id`."""

    id: str
    key: tuple[int, int] = field(init=False, repr=False, compare=False)
    """The order of `id` among stream entry ids."""

    BEGIN: ClassVar[Cursor]
    """Before the first entry (`0-0`): a reader from there reads the run's `begin` first."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", Cursor.key_of(self.id))

    @classmethod
    def parse(cls, value: str | None) -> Cursor:
        """A cursor a caller gave: `None` or `0` is `BEGIN`; else an entry id, or `InvalidIdError`."""
        if value is None or value in ("0", "0-0"):
            return cls.BEGIN
        if not _STREAM_ID.match(value) or any(int(part) >= 1 << 64 for part in value.split("-")):
            # Redis's own limit: both parts are 64-bit; a larger id would fail the shared read.
            raise InvalidIdError(f"event id {excerpt(value)} is not a stream entry id like '1700000000000-0'")
        return cls(value)

    @staticmethod
    def key_of(entry_id: str) -> tuple[int, int]:
        """Sort key of a stream entry id (`<ms>-<seq>`)."""
        ms, _, seq = entry_id.partition("-")
        return int(ms), int(seq or 0)

    @property
    def is_begin(self) -> bool:
        """Whether nothing has been read yet (so no stream need exist)."""
        return self.id == "0-0"

    def trimmed_past(self, *, oldest: str, oldest_type: str) -> bool:
        """Whether entries after this cursor may be gone, the stream now starting at `oldest`: the one rule
        by which a cursor expires (`BEGIN` expires once the run's `begin` is gone)."""
        if self.is_begin:
            return oldest_type != BEGIN
        return Cursor.key_of(oldest) > self.key

    def check(self, bounds: StreamBounds | None) -> bool:
        """Raise `CursorExpiredError` if entries after this cursor are gone, `CursorAheadError` if it is past
        the stream's end; `True` when the stream ended at it (nothing more to read)."""
        if bounds is None:
            if not self.is_begin:
                raise CursorExpiredError(self.id, "none: the stream expired")
            return False
        if self.key > Cursor.key_of(bounds.newest):
            raise CursorAheadError(self.id, bounds.newest)
        if self.trimmed_past(oldest=bounds.oldest, oldest_type=bounds.oldest_type):
            raise CursorExpiredError(self.id, bounds.oldest)
        return self.id == bounds.newest and bounds.newest_type == END


Cursor.BEGIN = Cursor("0-0")
