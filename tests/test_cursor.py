"""`Cursor`: parsing a resume cursor, its order, and the one rule by which it expires."""

from __future__ import annotations

import pytest

from pydantic_ai_stream import CursorAheadError, CursorExpiredError, InvalidIdError
from pydantic_ai_stream._core.cursor import Cursor
from pydantic_ai_stream._core.entry import StreamBounds


@pytest.mark.parametrize("bad", ["", "abc", "1-", "-1", "1-2-3", "1 -2"])
def test_stream_ids_are_checked(bad: str) -> None:
    with pytest.raises(InvalidIdError, match="event id"):
        Cursor.parse(bad)


@pytest.mark.parametrize("cursor", ["18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-0"])
def test_stream_ids_past_64_bits_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidIdError):
        Cursor.parse(cursor)
    assert Cursor.parse("18446744073709551615-18446744073709551615")


@pytest.mark.parametrize("begin", [None, "0", "0-0"])
def test_no_cursor_is_the_begin(begin: str | None) -> None:
    assert Cursor.parse(begin) == Cursor.BEGIN
    assert Cursor.parse(begin).is_begin
    assert not Cursor.parse("1-0").is_begin


def test_order_is_numeric_by_milliseconds_then_sequence() -> None:
    ids = ["10-0", "9-5", "9-10", "100-0", "9"]
    assert sorted(ids, key=Cursor.key_of) == ["9", "9-5", "9-10", "10-0", "100-0"]
    assert Cursor("9-10").key > Cursor("9-5").key
    assert Cursor("5-1") == Cursor.parse("5-1")


def test_a_cursor_is_trimmed_past_once_the_oldest_entry_is_after_it() -> None:
    assert not Cursor("5-0").trimmed_past(oldest="5-0", oldest_type="event")
    assert not Cursor("5-0").trimmed_past(oldest="4-9", oldest_type="event")
    assert Cursor("5-0").trimmed_past(oldest="5-1", oldest_type="event")


def test_the_begin_expires_once_the_runs_begin_is_gone() -> None:
    assert not Cursor.BEGIN.trimmed_past(oldest="7-0", oldest_type="begin")
    assert Cursor.BEGIN.trimmed_past(oldest="7-0", oldest_type="event")


def _bounds(oldest: str, newest: str, *, oldest_type: str = "begin", newest_type: str = "event") -> StreamBounds:
    return StreamBounds(oldest=oldest, oldest_type=oldest_type, newest=newest, newest_type=newest_type)


def test_check_against_the_streams_bounds() -> None:
    assert Cursor.BEGIN.check(None) is False, "no stream yet: wait for it"
    with pytest.raises(CursorExpiredError, match="the stream expired"):
        Cursor("3-0").check(None)
    with pytest.raises(CursorAheadError):
        Cursor("9-0").check(_bounds("1-0", "8-0"))
    with pytest.raises(CursorExpiredError) as expired:
        Cursor("1-0").check(_bounds("2-0", "8-0", oldest_type="event"))
    assert expired.value.after == "1-0"
    assert Cursor("4-0").check(_bounds("1-0", "8-0")) is False
    assert Cursor("8-0").check(_bounds("1-0", "8-0", newest_type="end")) is True, "resumed after `end`"
    assert Cursor.BEGIN.check(_bounds("1-0", "8-0")) is False
