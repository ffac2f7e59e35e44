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
from .scripts import LuaScript

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


_LEGACY = "legacy:"
"""The revision of a conversation the previous release stored (a JSON list of messages at `:msgs`): the
SHA1 of that value. A read converts it into a record and its entries."""

# Shared by the scripts below. `revision(value)`: the revision of a stored record value. `walk`: from entry
# `head` back to the first, at most `limit` entries (all if negative), the ids and parents newest first,
# or false if one is missing. `triples`: append {id, parent, message} of those, oldest first, to `out`
# (false if a message is missing). `keep_alive`: the shared keys expire with the last record (KEYS 2-5).
_LIB = """
local function revision(value)
  if string.sub(value, 1, 1) == '[' then return 'legacy:' .. redis.sha1hex(value) end
  return cjson.decode(value)['revision']
end
local function walk(parents, head, limit)
  local ids, ps = {}, {}
  local id = head
  while id ~= '' and (limit < 0 or #ids < limit) do
    local p = redis.call('HGET', parents, id)
    if not p then return false end
    ids[#ids + 1], ps[#ps + 1] = id, p
    id = p
  end
  return ids, ps
end
local function triples(entries, ids, ps, out)
  local n = #ids
  for first = n, 1, -1000 do
    local last = math.max(first - 999, 1)
    local chunk = {}
    for i = first, last, -1 do chunk[#chunk + 1] = ids[i] end
    local msgs = redis.call('HMGET', entries, unpack(chunk))
    for j, m in ipairs(chunk) do
      if not msgs[j] then return false end
      local i = first - j + 1
      out[#out + 1], out[#out + 2], out[#out + 3] = ids[i], ps[i], msgs[j]
    end
  end
  return true
end
local function keep_alive(now)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. now)
  local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')[2]
  for k = 2, 5 do
    if not last or last == 'inf' then redis.call('PERSIST', KEYS[k]) else redis.call('PEXPIREAT', KEYS[k], last) end
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: entries, parents, and the record to read it too. ARGV: limit (-1: all), the head (without a record).
# Returns {} without a record; {'legacy', value} for a record the previous release stored; else
# {'ok' or 'missing', record or '', then id, parent, message of each entry, oldest first}.
_READ = LuaScript(
    _LIB
    + """
local record, head = '', ARGV[2]
if KEYS[3] then
  record = redis.call('GET', KEYS[3])
  if not record then return {} end
  if string.sub(record, 1, 1) == '[' then return {'legacy', record} end
  head = cjson.decode(record)['head_id']
  if type(head) ~= 'string' then head = '' end
end
local out = {'ok', record}
local ids, ps = walk(KEYS[2], head, tonumber(ARGV[1]))
if not ids or not triples(KEYS[1], ids, ps, out) then return {'missing', record} end
return out
"""
)

# KEYS: record, entries, parents, index, expiry. ARGV: expected revision ('' for none), record, its head
# ('' for none), conversation id, updated at (ms), ttl (ms; '' for none, 'keep' for the key's own), then
# id, parent ('' for none), message of each new entry. Returns 1; 0 if the stored revision is another; -1
# if the head or a new entry's parent is neither stored nor new (a delete released it).
_WRITE = LuaScript(
    _LIB
    + """
local stored = redis.call('GET', KEYS[1])
if (stored and revision(stored) or '') ~= ARGV[1] then return 0 end
local new = {}
for i = 7, #ARGV, 3 do new[ARGV[i]] = true end
local function known(id) return id == '' or new[id] or redis.call('HEXISTS', KEYS[3], id) == 1 end
if not known(ARGV[3]) then return -1 end
for i = 7, #ARGV, 3 do
  if not known(ARGV[i + 1]) then return -1 end
end
for i = 7, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
local ttl = ARGV[6]
if ttl == 'keep' then
  local left = redis.call('PTTL', KEYS[1])
  ttl = left > 0 and tostring(left) or ''
end
local now = now_ms()
if ttl == '' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl) end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[5], ttl == '' and 'inf' or tostring(now + tonumber(ttl)), ARGV[4])
keep_alive(now)
return 1
"""
)

# KEYS: the record to delete, entries, parents, index, expiry, then the record of each conversation in the
# index. ARGV: its revision, its id, then the index's members (in the order of their KEYS). Deletes the
# record and every entry no remaining record's history or branch reaches. Returns the number of entries
# deleted; -1 if the revision is another (or it is gone); -2 if the index is not the one given (read it
# again).
_DELETE = LuaScript(
    _LIB
    + """
local stored = redis.call('GET', KEYS[1])
if not stored or revision(stored) ~= ARGV[1] then return -1 end
local members = redis.call('ZRANGE', KEYS[4], 0, -1)
if #members ~= #ARGV - 2 then return -2 end
local given = {}
for i = 3, #ARGV do given[ARGV[i]] = true end
for _, m in ipairs(members) do
  if not given[m] then return -2 end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
local reachable = {}
for k = 6, #KEYS do
  local value = redis.call('GET', KEYS[k])
  if not value then
    redis.call('ZREM', KEYS[4], ARGV[k - 3])  -- expired
    redis.call('ZREM', KEYS[5], ARGV[k - 3])
  elseif string.sub(value, 1, 1) == '{' then
    local record = cjson.decode(value)
    local tips = {}
    if type(record['head_id']) == 'string' then tips[1] = record['head_id'] end
    for _, tip in ipairs(record['branches']) do tips[#tips + 1] = tip end
    for _, id in ipairs(tips) do
      while id and id ~= '' and not reachable[id] do
        reachable[id] = true
        id = redis.call('HGET', KEYS[3], id)
      end
    end
  end
end
local dead = {}
for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not reachable[id] then dead[#dead + 1] = id end
end
for first = 1, #dead, 1000 do
  local chunk = {unpack(dead, first, math.min(first + 999, #dead))}
  redis.call('HDEL', KEYS[2], unpack(chunk))
  redis.call('HDEL', KEYS[3], unpack(chunk))
end
keep_alive(now_ms())
return #dead
"""
)

# KEYS: index, expiry, then records. ARGV: their conversation ids. Returns each record ('' if it expired:
# then it leaves the index too).
_READ_RECORDS = LuaScript(
    """
local out = {}
for k = 3, #KEYS do
  local value = redis.call('GET', KEYS[k])
  if not value then
    redis.call('ZREM', KEYS[1], ARGV[k - 2])
    redis.call('ZREM', KEYS[2], ARGV[k - 2])
  end
  out[#out + 1] = value or ''
end
return out
"""
)


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

    @property
    def _shared(self) -> list[str]:
        return [self.keys.entries, self.keys.parents, self.keys.index, self.keys.expiry]

    async def read(self, conversation_id: str) -> tuple[ConversationRecord, list[ConversationEntry]] | None:
        record_key = self.keys.record(conversation_id)
        while True:
            reply = await _READ(self.redis, keys=[self.keys.entries, self.keys.parents, record_key], args=[-1])
            if not reply:
                return None
            if decode(reply[0]) == "legacy":
                await self._convert(conversation_id, _raw(reply[1]))
                continue
            record = decode_record(reply[1])
            if decode(reply[0]) == "missing":
                raise LookupError(f"conversation {conversation_id!r} misses an entry of its history")
            return record, _entries(reply[2:])

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
        values = await _READ_RECORDS(
            self.redis,
            keys=[self.keys.index, self.keys.expiry, *(self.keys.record(m) for m in members)],
            args=members,
        )
        records = [decode_record(value) for value in values if _raw(value).startswith(b"{")]
        return records[:limit]

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        ttl = "" if self.ttl is None else self.ttl * 1000
        await self._write(self.own(record), new_entries, expected_revision, ttl=ttl)

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        record_key = self.keys.record(conversation_id)
        while True:
            members = await active_members(self.redis, self.keys.index)
            deleted = await _DELETE(
                self.redis,
                keys=[record_key, *self._shared, *(self.keys.record(m) for m in members)],
                args=[expected_revision, conversation_id, *members],
            )
            if deleted == -1:
                raise ConversationConflict(conversation_id)
            if deleted >= 0:
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
        reply = await _READ(
            self.redis, keys=[self.keys.entries, self.keys.parents], args=[-1 if limit is None else limit, head_id]
        )
        if decode(reply[0]) == "missing":
            raise KeyError(head_id)
        return _entries(reply[2:])

    async def _write(
        self,
        record: ConversationRecord,
        new_entries: Sequence[ConversationEntry],
        expected_revision: str | None,
        *,
        ttl: int | str,
    ) -> None:
        args: list[str | int | bytes] = [
            expected_revision or "",
            encode_record(record),
            record.head_id or "",
            record.conversation_id,
            int(record.updated_at.timestamp() * 1000),
            ttl,
        ]
        for entry in new_entries:
            args += [entry.id, entry.parent_id or "", encode_message(entry.message)]
        written = await _WRITE(self.redis, keys=[self.keys.record(record.conversation_id), *self._shared], args=args)
        if written != 1:
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
        revision = _LEGACY + hashlib.sha1(value).hexdigest()
        with contextlib.suppress(ConversationConflict):  # converted or rewritten by another process: read again
            await self._write(record, entries, revision, ttl="keep")


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
