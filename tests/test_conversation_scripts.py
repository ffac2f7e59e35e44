"""The conversation store's Lua scripts (`_store/scripts/conversation_*.lua`): each one's KEYS/ARGV contract and
every reply, on the real Redis, through the calls with named arguments."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream._core.keys import ConversationKeys
from pydantic_ai_stream._store.scripts import LuaScript
from pydantic_ai_stream._store.scripts import conversation as scripts
from pydantic_ai_stream._store.scripts.conversation import DeleteState, ReadState, WriteState

SCRIPTS = Path(scripts.__file__).parent


@pytest.fixture
def keys(settings: Settings) -> ConversationKeys:
    return ConversationKeys.build(prefix=settings.redis_prefix, scope_id=1, user_id=1)


def _record(revision: str, head_id: str | None, branches: list[str] | None = None) -> bytes:
    return json.dumps({"revision": revision, "head_id": head_id, "branches": branches or []}).encode()


async def _write(
    redis: Redis,
    keys: ConversationKeys,
    conversation_id: str,
    *,
    expected: str = "",
    revision: str = "r1",
    head_id: str = "",
    entries: list[tuple[str, str, bytes]] | None = None,
    ttl: int | str = "",
    branches: list[str] | None = None,
) -> WriteState:
    return await scripts.write_record(
        redis,
        keys,
        conversation_id=conversation_id,
        expected_revision=expected,
        record=_record(revision, head_id or None, branches),
        head_id=head_id,
        updated_at_ms=1_000,
        ttl=ttl,
        new_entries=entries or [],
    )


def _chain(*ids: str) -> list[tuple[str, str, bytes]]:
    """Entries `ids`, each the parent of the next, with messages `"<id>"`."""
    return [(entry_id, ids[i - 1] if i else "", json.dumps(entry_id).encode()) for i, entry_id in enumerate(ids)]


def test_every_script_states_its_contract_and_is_filled_in_completely() -> None:
    paths = sorted(SCRIPTS.glob("conversation_*.lua"))
    for path in paths:
        header = [line for line in path.read_text().splitlines() if line.startswith("--")]
        for part in ("-- KEYS", "-- ARGV", "-- Returns"):
            assert any(line.startswith(part) for line in header), (path.name, part)
    loaded = [value for value in vars(scripts).values() if isinstance(value, LuaScript)]
    assert len(loaded) == len(paths) == 4
    for script in loaded:
        assert not re.search(r"\$\w", script.source), script.source[:80]  # a `$` left is Lua's own


async def test_write_record_saves_the_record_and_its_new_entries_with_its_expiry(
    redis: Redis, keys: ConversationKeys
) -> None:
    written = await _write(redis, keys, "c1", head_id="e2", entries=_chain("e1", "e2"), ttl=60_000)
    assert written is WriteState.WRITTEN
    assert await redis.get(keys.record("c1")) == _record("r1", "e2")
    assert await redis.hgetall(keys.entries) == {b"e1": b'"e1"', b"e2": b'"e2"'}
    assert await redis.hgetall(keys.parents) == {b"e1": b"", b"e2": b"e1"}
    assert await redis.zrange(keys.index, 0, -1, withscores=True) == [(b"c1", 1_000.0)]
    [(_, expires)] = await redis.zrange(keys.expiry, 0, -1, withscores=True)
    assert 0 < await redis.pttl(keys.record("c1")) <= 60_000
    for shared in (keys.entries, keys.parents, keys.index, keys.expiry):
        assert await redis.pexpiretime(shared) == expires, "the shared keys expire with the last record"
    kept = await _write(redis, keys, "c1", expected="r1", revision="r2", head_id="e2", ttl="keep")
    assert kept is WriteState.WRITTEN
    assert 0 < await redis.pttl(keys.record("c1")) <= 60_000, "'keep': the key's own expiry"
    forever = await _write(redis, keys, "c1", expected="r2", revision="r3", head_id="e2")
    assert forever is WriteState.WRITTEN
    assert await redis.pttl(keys.record("c1")) == -1
    assert await redis.zscore(keys.expiry, "c1") == float("inf")
    assert await redis.pttl(keys.entries) == -1


async def test_write_record_refuses_another_revision_and_an_unknown_parent(
    redis: Redis, keys: ConversationKeys
) -> None:
    await _write(redis, keys, "c1", head_id="e1", entries=_chain("e1"))
    assert await _write(redis, keys, "c1", revision="r2") is WriteState.CONFLICT, "expected none, r1 is stored"
    assert await _write(redis, keys, "c1", expected="r0", revision="r2") is WriteState.CONFLICT
    unknown_head = await _write(redis, keys, "c1", expected="r1", revision="r2", head_id="gone")
    assert unknown_head is WriteState.UNKNOWN_PARENT
    orphan = [("e3", "gone", b'"e3"')]
    assert await _write(redis, keys, "c1", expected="r1", head_id="e3", entries=orphan) is WriteState.UNKNOWN_PARENT
    assert await redis.get(keys.record("c1")) == _record("r1", "e1"), "nothing written"
    assert not await redis.hexists(keys.entries, "e3")
    assert [int(state) for state in WriteState] == [1, 0, -1]


async def test_write_record_takes_the_previous_releases_record_by_its_legacy_revision(
    redis: Redis, keys: ConversationKeys
) -> None:
    legacy = b"[]"
    await redis.set(keys.record("c1"), legacy)
    revision = scripts.LEGACY_REVISION + hashlib.sha1(legacy).hexdigest()
    assert await _write(redis, keys, "c1", expected="other") is WriteState.CONFLICT
    assert await _write(redis, keys, "c1", expected=revision) is WriteState.WRITTEN


async def test_read_history_from_a_record_or_a_head(redis: Redis, keys: ConversationKeys) -> None:
    assert await scripts.read_history(redis, keys, record_key=keys.record("none")) is None
    await redis.set(keys.record("old"), b'[{"legacy": 1}]')
    legacy = await scripts.read_history(redis, keys, record_key=keys.record("old"))
    assert legacy == (ReadState.LEGACY, b'[{"legacy": 1}]', [])
    await _write(redis, keys, "c1", head_id="e3", entries=_chain("e1", "e2", "e3"))
    whole = await scripts.read_history(redis, keys, record_key=keys.record("c1"))
    assert whole is not None
    assert (whole.state, whole.record) == (ReadState.OK, _record("r1", "e3"))
    assert whole.triples == [b"e1", b"", b'"e1"', b"e2", b"e1", b'"e2"', b"e3", b"e2", b'"e3"'], "oldest first"
    last = await scripts.read_history(redis, keys, head_id="e2", limit=1)
    assert last == (ReadState.OK, b"", [b"e2", b"e1", b'"e2"'])
    assert await scripts.read_history(redis, keys, head_id="") == (ReadState.OK, b"", [])
    await redis.hdel(keys.entries, "e1")
    assert await scripts.read_history(redis, keys, head_id="e3") == (ReadState.MISSING, b"", [])
    await redis.hdel(keys.parents, "e2")
    missing = await scripts.read_history(redis, keys, record_key=keys.record("c1"))
    assert missing == (ReadState.MISSING, _record("r1", "e3"), [])
    assert {state.value for state in ReadState} == {"ok", "missing", "legacy"}


async def test_delete_record_deletes_what_no_other_record_reaches(redis: Redis, keys: ConversationKeys) -> None:
    await _write(redis, keys, "c1", head_id="e2", entries=_chain("e1", "e2"))
    # c2 forks c1 after e1; its branch e9 keeps e9 too.
    fork = [("f1", "e1", b'"f1"'), ("e9", "", b'"e9"')]
    await _write(redis, keys, "c2", head_id="f1", entries=fork, branches=["e9"])
    await redis.set(keys.record("c3"), _record("r1", None))
    await redis.zadd(keys.index, {"c3": 1})
    await redis.delete(keys.record("c3"))  # expired: it leaves the index as the delete passes
    args = {"conversation_id": "c1", "revision": "r1"}
    assert await scripts.delete_record(redis, keys, **args, members=["c1"]) is DeleteState.INDEX_CHANGED
    assert await scripts.delete_record(redis, keys, **args, members=["c1", "c2", "cX"]) is DeleteState.INDEX_CHANGED
    wrong = {"conversation_id": "c1", "revision": "r0"}
    assert await scripts.delete_record(redis, keys, **wrong, members=["c1", "c2", "c3"]) is DeleteState.CONFLICT
    deleted = await scripts.delete_record(redis, keys, **args, members=["c1", "c2", "c3"])
    assert deleted == 1, "e2: only c1 reached it"
    assert not await redis.exists(keys.record("c1"))
    assert set(await redis.hkeys(keys.entries)) == set(await redis.hkeys(keys.parents)) == {b"e1", b"f1", b"e9"}
    assert await redis.zrange(keys.index, 0, -1) == await redis.zrange(keys.expiry, 0, -1) == [b"c2"]
    gone = await scripts.delete_record(redis, keys, **args, members=["c2"])
    assert gone is DeleteState.CONFLICT, "a record that is gone"
    assert [int(state) for state in DeleteState] == [-1, -2]


async def test_read_records_reads_each_and_drops_those_that_expired(redis: Redis, keys: ConversationKeys) -> None:
    await _write(redis, keys, "c1")
    await redis.zadd(keys.index, {"gone": 2})
    await redis.zadd(keys.expiry, {"gone": 2})
    assert await scripts.read_records(redis, keys, members=["gone", "c1"]) == [b"", _record("r1", None)]
    assert await redis.zrange(keys.index, 0, -1) == await redis.zrange(keys.expiry, 0, -1) == [b"c1"]
