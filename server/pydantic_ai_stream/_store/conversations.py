"""pydantic-ai `ConversationStore`s of one user each: what they share, and the Redis one (the default).

A conversation is a session: its `conversation_id` is the session id and its `scope` is
`"<scope_id>:<user_id>"`. A store holds one user's conversations, because session ids are unique per
user only; a call that names another scope finds nothing there, and a record of another scope (a fork
across users) is refused with `ForeignScopeError`.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)
from pydantic_ai.messages import ModelMessagesTypeAdapter

from .._core.entry import decode
from .._core.errors import ForeignScopeError
from .._core.keys import check_int_id
from .._core.messages import decode_messages, encode_message
from .._core.settings import Settings
from .active import active_members
from .redis import AsyncRedis, is_cluster
from .scripts import conversation as scripts

__all__ = [
    "RedisConversationStore",
    "UserConversationStore",
    "decode_record",
    "encode_record",
    "user_scope",
]

_RecordAdapter: TypeAdapter[ConversationRecord] = TypeAdapter(ConversationRecord)


def encode_record(record: ConversationRecord) -> bytes:
    """A record as JSON."""
    return _RecordAdapter.dump_json(record)


def decode_record(data: bytes | str) -> ConversationRecord:
    """The record `encode_record` encoded."""
    return _RecordAdapter.validate_json(data)


def user_scope(scope_id: int, user_id: int) -> str:
    """The pydantic-ai `scope` of a user's conversations: `"<scope_id>:<user_id>"`."""
    return f"{check_int_id('scope_id', scope_id)}:{check_int_id('user_id', user_id)}"


class UserConversationStore(ConversationStore):
    """A `ConversationStore` of one user's conversations that reads a record with its whole history at once."""

    scope: str
    """The user's scope, `"<scope_id>:<user_id>"`: every record it holds has it."""

    @abstractmethod
    async def read(self, conversation_id: str) -> tuple[ConversationRecord, list[ConversationEntry]] | None:
        """A conversation's record and its whole history, in one round trip; `None` if it is not stored."""

    @abstractmethod
    async def _write_owned(
        self, record: ConversationRecord, new_entries: Sequence[ConversationEntry], expected_revision: str | None
    ) -> None:
        """`write_record` of a record with this store's scope; raises `ConversationConflict` as it does."""

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        await self._write_owned(self.own(record), new_entries, expected_revision)

    def own(self, record: ConversationRecord) -> ConversationRecord:
        """`record` with this store's scope (a record saved without one gets it); raises `ForeignScopeError`
        for another scope."""
        if record.scope is None:
            return replace(record, scope=self.scope)
        if record.scope != self.scope:
            raise ForeignScopeError(self.scope, record.scope)
        return record

    def sees(self, scope: str | None) -> bool:
        """Whether a call naming `scope` may see this store's conversations."""
        return scope is None or scope == self.scope


class RedisConversationStore(UserConversationStore):
    """One user's conversations in Redis, for pydantic-ai (`store.load(session_id)`) and `RedisSession` alike.

    Keys (`ConversationKeys`), all in the user's hash slot, so each call is one script on a Redis Cluster:
    a conversation's record (JSON) at its session's `...:{session_id}:msgs`; the user's messages, each stored
    once, in the hashes `...::msgs:entries` (id -> message) and `...::msgs:parents` (id -> previous id); the
    sorted sets `...::msgs:index` (by last save) and `...::msgs:expiry`. A load is two round trips (the
    record, then its whole history in one script), `read` one.

    A fork shares the history it keeps, within the user: a fork into another user's scope is refused
    (`ForeignScopeError`), since that user's keys are in another slot; load it and save it with the other
    user's store instead, which copies its messages. With `ttl`, a record expires `ttl` seconds after its
    last save, and the user's shared keys with the last record. `delete` erases the conversation's record and
    every message no other record of the user reaches (its history, its branches, and those of conversations
    that expired), a pass over the user's message ids. A conversation the previous release stored (a JSON
    list at `:msgs`) is converted when it is first read (its expiry kept).
    """

    def __init__(
        self,
        *,
        redis: AsyncRedis,
        scope_id: int,
        user_id: int,
        settings: Settings | None = None,
        ttl: int | None = None,
    ) -> None:
        """`settings` give the key prefix (when `None`, read from `PYDANTIC_AI_STREAM_*`); `ttl` is in seconds."""
        self.redis = redis
        self.scope = user_scope(scope_id, user_id)
        settings = settings if settings is not None else Settings()
        self.keys = settings.conversation_keys(cluster=is_cluster(redis), scope_id=scope_id, user_id=user_id)
        self.ttl = ttl

    async def read(self, conversation_id: str) -> tuple[ConversationRecord, list[ConversationEntry]] | None:
        record_key = self.keys.record(conversation_id)
        while True:
            history = await scripts.read_history(self.redis, self.keys, record_key=record_key)
            if history is None:
                return None
            if history.state is scripts.ReadState.LEGACY:
                await self._convert(conversation_id, _raw(history.record))
                continue
            record = decode_record(history.record)
            if history.state is scripts.ReadState.MISSING:
                raise LookupError(f"conversation {conversation_id!r} misses an entry of its history")
            return record, _entries(history.triples)

    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        while True:
            value = await self.redis.get(self.keys.record(conversation_id))
            if value is None:
                return None
            if not _raw(value).startswith(b"["):
                return decode_record(value)
            await self._convert(conversation_id, _raw(value))

    async def read_records(self, *, scope: str | None = None, limit: int | None = None) -> Sequence[ConversationRecord]:
        if not self.sees(scope) or limit == 0:
            return []
        members = [decode(m) for m in await self.redis.zrevrange(self.keys.index, 0, -1) if isinstance(m, bytes | str)]
        if not members:
            return []
        values = await scripts.read_records(self.redis, self.keys, members=members)
        records = [decode_record(value) for value in values if _raw(value).startswith(b"{")]
        return records[:limit]

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        while True:
            members = await active_members(self.redis, self.keys.index)
            deleted = await scripts.delete_record(
                self.redis, self.keys, conversation_id=conversation_id, revision=expected_revision, members=members
            )
            if deleted is scripts.DeleteState.CONFLICT:
                raise ConversationConflict(conversation_id)
            if deleted is not scripts.DeleteState.INDEX_CHANGED:
                return

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        history = await self.read_history(entry_id, limit=1)
        if not history:
            raise KeyError(entry_id)
        return history[0]

    async def read_history(self, head_id: str | None, *, limit: int | None = None) -> list[ConversationEntry]:
        """The entries up to `head_id` (the last `limit` of them) in one script call."""
        if head_id is None or limit == 0:
            return []
        history = await scripts.read_history(
            self.redis, self.keys, head_id=head_id, limit=-1 if limit is None else limit
        )
        if history is None or history.state is scripts.ReadState.MISSING:
            raise KeyError(head_id)
        return _entries(history.triples)

    async def _write_owned(
        self,
        record: ConversationRecord,
        new_entries: Sequence[ConversationEntry],
        expected_revision: str | None,
        *,
        ttl: int | str | None = None,
    ) -> None:
        """`ttl`: in ms, `"keep"` the key's expiry, `None` the store's own."""
        if ttl is None:
            ttl = "" if self.ttl is None else self.ttl * 1000
        written = await scripts.write_record(
            self.redis,
            self.keys,
            conversation_id=record.conversation_id,
            expected_revision=expected_revision or "",
            record=encode_record(record),
            head_id=record.head_id or "",
            updated_at_ms=int(record.updated_at.timestamp() * 1000),
            ttl=ttl,
            new_entries=[(entry.id, entry.parent_id or "", encode_message(entry.message)) for entry in new_entries],
        )
        if written is not scripts.WriteState.WRITTEN:
            raise ConversationConflict(record.conversation_id)

    async def _convert(self, conversation_id: str, value: bytes) -> None:
        """Store a conversation the previous release kept as a JSON list of messages as a record and its entries
        (the key's expiry kept); a conversation changed meanwhile is left to the caller's next read."""
        entries: list[ConversationEntry] = []
        for message in ModelMessagesTypeAdapter.validate_json(value):
            entries.append(ConversationEntry(parent_id=entries[-1].id if entries else None, message=message))
        record = ConversationRecord(
            conversation_id=conversation_id, head_id=entries[-1].id if entries else None, scope=self.scope
        )
        revision = scripts.LEGACY_REVISION + hashlib.sha1(value).hexdigest()
        with contextlib.suppress(ConversationConflict):  # converted or rewritten by another process: read again
            await self._write_owned(record, entries, revision, ttl="keep")


def _raw(value: bytes | str) -> bytes:
    """A Redis reply as `bytes`, whether the client decodes responses or not."""
    return value if isinstance(value, bytes) else value.encode()


def _entries(flat: list[Any]) -> list[ConversationEntry]:
    """Entries from a script's id, parent, message triples."""
    messages = decode_messages(flat[2::3])
    return [
        ConversationEntry(id=decode(entry_id), parent_id=decode(parent) or None, message=message)
        for entry_id, parent, message in zip(flat[0::3], flat[1::3], messages, strict=True)
    ]
