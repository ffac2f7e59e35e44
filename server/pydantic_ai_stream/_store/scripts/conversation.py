"""The conversation store's scripts (`conversation_*.lua` beside this module), each behind a call with named
arguments, and their replies' codes (see `RedisConversationStore` for the keys)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from ..._core.entry import decode
from ..._core.keys import ConversationKeys
from ..redis import AsyncRedis
from . import LuaScript

__all__ = [
    "LEGACY_REVISION",
    "DeleteState",
    "History",
    "ReadState",
    "WriteState",
    "delete_record",
    "read_history",
    "read_records",
    "write_record",
]

LEGACY_REVISION = "legacy:"
"""The revision of a conversation the previous release stored (a JSON list of messages at `:msgs`): the
SHA1 of that value. A read converts it into a record and its entries."""


class ReadState(StrEnum):
    """How `conversation_read` found a conversation's history."""

    OK = "ok"
    """The whole history (or its last entries, as many as asked)."""
    MISSING = "missing"
    """An entry of the history is not stored."""
    LEGACY = "legacy"
    """The record is one the previous release stored: convert it, then read again."""


class WriteState(IntEnum):
    """What `conversation_write` did."""

    WRITTEN = 1
    CONFLICT = 0
    """The stored revision is not the one expected: nothing written."""
    UNKNOWN_PARENT = -1
    """The head or a new entry's parent is neither stored nor new (a delete released it): nothing written."""


class DeleteState(IntEnum):
    """What `conversation_delete` did instead of deleting (else it returns the number of entries deleted)."""

    CONFLICT = -1
    """The stored revision is not the one expected, or the record is gone."""
    INDEX_CHANGED = -2
    """The user's index is not the one given: read it again."""


_CODES = {f"ReadState.{state.name}": state.value for state in ReadState} | {"LEGACY_REVISION": LEGACY_REVISION}
_READ = LuaScript.load(__package__, "conversation_read", values=_CODES)
_WRITE = LuaScript.load(__package__, "conversation_write", codes=[WriteState], values=_CODES)
_DELETE = LuaScript.load(__package__, "conversation_delete", codes=[DeleteState], values=_CODES)
_READ_RECORDS = LuaScript.load(__package__, "conversation_records")


class History(NamedTuple):
    state: ReadState
    record: bytes | str
    """The record's value (`""` when the history was read from a head given)."""
    triples: list[Any]
    """Id, parent, message of each entry, oldest first."""


async def read_history(
    redis: AsyncRedis, keys: ConversationKeys, *, record_key: str | None = None, head_id: str = "", limit: int = -1
) -> History | None:
    """A history (the last `limit` entries; all if negative) from the head of the record at `record_key` (read
    too), or from `head_id`; `None` if there is no such record."""
    record = [record_key] if record_key else []
    reply = await _READ(redis, keys=[keys.entries, keys.parents, *record], args=[limit, head_id])
    return History(ReadState(decode(reply[0])), reply[1], reply[2:]) if reply else None


async def write_record(
    redis: AsyncRedis,
    keys: ConversationKeys,
    *,
    conversation_id: str,
    expected_revision: str,
    record: bytes,
    head_id: str,
    updated_at_ms: int,
    ttl: int | str,
    new_entries: Sequence[tuple[str, str, bytes]],
) -> WriteState:
    """Save a record (`ttl` in ms: `""` for none, `"keep"` for the key's own) with its new entries (id, parent,
    message) if the stored revision is `expected_revision` (`""`: none stored)."""
    args: list[str | int | bytes] = [expected_revision, record, head_id, conversation_id, updated_at_ms, ttl]
    args += [item for entry in new_entries for item in entry]
    record_key = keys.record(conversation_id)
    return WriteState(int(await _WRITE(redis, keys=[record_key, *_shared_keys(keys)], args=args)))


async def delete_record(
    redis: AsyncRedis, keys: ConversationKeys, *, conversation_id: str, revision: str, members: Sequence[str]
) -> DeleteState | int:
    """Delete a record of `revision` and the entries no other record reaches, given the user's index `members`:
    the number of entries deleted, or why nothing was."""
    record_keys = [keys.record(member) for member in members]
    deleted = int(
        await _DELETE(
            redis,
            keys=[keys.record(conversation_id), *_shared_keys(keys), *record_keys],
            args=[revision, conversation_id, *members],
        )
    )
    return DeleteState(deleted) if deleted < 0 else deleted


async def read_records(redis: AsyncRedis, keys: ConversationKeys, *, members: Sequence[str]) -> list[bytes | str]:
    """The records of the conversations `members` (`""` for one that expired: it leaves the index)."""
    record_keys = [keys.record(member) for member in members]
    return list(await _READ_RECORDS(redis, keys=[keys.index, keys.expiry, *record_keys], args=list(members)))


def _shared_keys(keys: ConversationKeys) -> list[str]:
    """The user's keys every record shares (see `keep_alive` in the library)."""
    return [keys.entries, keys.parents, keys.index, keys.expiry]
