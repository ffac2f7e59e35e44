"""`RedisConversationStore`: one user's pydantic-ai conversations in Redis (and on a Redis Cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import ConversationConflict
from pydantic_ai.messages import ModelMessagesTypeAdapter
from pydantic_ai.models.test import TestModel
from redis.asyncio import Connection, Redis, RedisCluster
from redis.cluster import key_slot

from pydantic_ai_stream import ForeignScopeError, RedisConversationStore, RedisSession, Runtime, Settings
from support import texts, turn

Client = Redis | RedisCluster


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.e2e)])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A plain Redis client, or one of the 3-master Redis Cluster."""
    if request.param == "cluster":
        cluster = await RedisCluster.from_url(request.getfixturevalue("cluster_url")).initialize()
        yield cluster
        await cluster.aclose()
    else:
        redis = Redis.from_url(request.getfixturevalue("redis_url"))
        yield redis
        await redis.aclose()


@pytest.fixture
async def on(client: Client, settings: Settings) -> AsyncIterator[Runtime]:
    """The test's runtime on `client` (its key prefix)."""
    async with Runtime(redis=client, settings=settings) as runtime:
        yield runtime


def store_of(runtime: Runtime, user_id: int = 1, **kw: Any) -> RedisConversationStore:
    return RedisConversationStore(redis=runtime.redis, scope_id=1, user_id=user_id, settings=runtime.settings, **kw)


def session_of(runtime: Runtime, session_id: str = "s1", user_id: int = 1, **kw: Any) -> RedisSession:
    return RedisSession(redis=runtime.redis, runtime=runtime, scope_id=1, user_id=user_id, session_id=session_id, **kw)


async def test_pydantic_ai_and_the_session_continue_each_others_conversation(on: Runtime) -> None:
    store = store_of(on)
    agent = Agent(TestModel(custom_output_text="first answer"))
    result = await agent.run("first", conversation=Conversation(conversation_id="s1"))
    await store.save(result, scope="1:1")

    session = session_of(on)
    await session.load()
    assert texts(session.msgs) == ["first", "first answer"]
    assert session.usage.requests == 1
    session.add_msgs(turn("second", "second answer"))
    await session.save()

    conversation = await store.load("s1", scope="1:1")
    assert conversation is not None
    assert texts(conversation.messages) == ["first", "first answer", "second", "second answer"]
    assert conversation.usage.requests == 2
    third = await agent.run("third", conversation=conversation)
    await store.save(third)
    await session.load()
    assert texts(session.msgs)[-2:] == ["third", "first answer"]
    assert len(session.msgs) == 6

    assert await store.load("s1", scope="1:2") is None, "another scope does not see it"
    assert await store_of(on, user_id=2).load("s1") is None, "nor another user's store"
    [record] = await store.list_conversations(scope="1:1")
    assert (record.conversation_id, record.scope) == ("s1", "1:1")
    assert await store.list_conversations(scope="9:9") == []


async def test_of_two_concurrent_saves_of_a_conversation_one_wins_the_other_conflicts(on: Runtime) -> None:
    first = session_of(on)
    first.add_msgs(turn("hi", "hello"))
    await first.save()
    a, b = session_of(on), session_of(on)
    await asyncio.gather(a.load(), b.load())
    a.add_msgs(turn("from a", "ok a"))
    b.add_msgs(turn("from b", "ok b"))
    outcomes = await asyncio.gather(a.save(), b.save(), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["ConversationConflict", "NoneType"]
    won = a if outcomes[0] is None else b
    stored = session_of(on)
    await stored.load()
    assert texts(stored.msgs) == texts(won.msgs)

    # pydantic-ai's own saves too: both loaded the same revision.
    store = store_of(on)
    c1, c2 = await store.load("s1"), await store.load("s1")
    assert c1 is not None
    assert c2 is not None
    c1.messages += turn("c1", "one")
    c2.messages += turn("c2", "two")
    outcomes = await asyncio.gather(store.save(c1), store.save(c2), return_exceptions=True)
    assert sum(isinstance(o, ConversationConflict) for o in outcomes) == 1


async def test_a_fork_shares_the_history_it_keeps_within_the_user(on: Runtime) -> None:
    store = store_of(on)
    session = session_of(on)
    session.add_msgs([*turn("one", "1"), *turn("two", "2")])
    await session.save()
    entries = on.redis.hlen(store.keys.entries)
    assert await entries == 4

    fork = await store.fork("s1", at=2, new_conversation_id="f1")
    assert texts(fork.messages) == ["one", "1"]
    assert await on.redis.hlen(store.keys.entries) == 4, "shared, not copied"
    forked = session_of(on, "f1")
    await forked.load()
    forked.add_msgs(turn("other two", "2'"))
    await forked.save()
    original = await store.load("s1")
    assert original is not None
    assert texts(original.messages) == ["one", "1", "two", "2"]

    with pytest.raises(ForeignScopeError):
        await store.fork("s1", new_conversation_id="f2", scope="1:2")
    assert await store.load("f2") is None

    await store.delete("s1")
    assert await store.load("s1") is None
    await forked.load()
    assert texts(forked.msgs) == ["one", "1", "other two", "2'"], "the fork keeps the history it shares"
    assert await on.redis.hlen(store.keys.entries) == 4, "the original's own turn is deleted"
    await store.delete("f1")
    assert await on.redis.exists(store.keys.entries, store.keys.parents) == 0, "no message is left"


async def test_a_history_of_1000_messages_loads_in_one_round_trip(redis_url: str, settings: Settings) -> None:
    sent: list[bytes] = []

    class Counting(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent.append(bytes(command[0] if isinstance(command, list) else command)[:40])
            await super().send_packed_command(command, check_health)

    async with (
        Redis.from_url(redis_url, connection_class=Counting) as redis,
        Runtime(redis=redis, settings=settings) as runtime,
    ):
        session = session_of(runtime)
        for i in range(500):
            session.add_msgs(turn(f"q{i}", f"a{i}"))
        await session.save()
        warm = session_of(runtime)
        await warm.load()  # the script is loaded, the connection made

        sent.clear()
        loaded = session_of(runtime)
        await loaded.load()
        assert len(loaded.msgs) == 1000
        assert texts(loaded.msgs)[-2:] == ["q499", "a499"]
        assert len(sent) == 1, sent  # one EVALSHA: the record and its whole history

        sent.clear()
        conversation = await store_of(runtime).load("s1")
        assert conversation is not None
        assert len(conversation.messages) == 1000
        assert len(sent) == 2, sent  # pydantic-ai's load: the record, then the history in one script
        recent = await store_of(runtime).load("s1", limit=3)
        assert recent is not None
        assert texts(recent.messages) == ["a498", "q499", "a499"]
        sent.clear()

        sent.clear()
        loaded.add_msgs(turn("q500", "a500"))
        await loaded.save()
        assert len(sent) == 1, sent  # the save appends: one script


async def test_a_conversation_the_previous_release_stored_loads_and_is_converted(on: Runtime) -> None:
    session = session_of(on)
    old = [*turn("one", "1"), *turn("two", "2")]
    await on.redis.set(session.key, ModelMessagesTypeAdapter.dump_json(old), ex=500)

    await session.load()
    assert texts(session.msgs) == ["one", "1", "two", "2"]
    stored = await on.redis.get(session.key)
    assert (stored or b"").startswith(b"{"), "now a record"
    assert 400 < await on.redis.ttl(session.key) <= 500, "it expires when it did"
    session.add_msgs(turn("three", "3"))
    await session.save()
    conversation = await store_of(on).load("s1", scope="1:1")
    assert conversation is not None
    assert len(conversation.messages) == 6


async def test_ttl_expires_the_record_and_the_shared_keys_with_the_last_one(on: Runtime) -> None:
    store = store_of(on)
    short = session_of(on, "short", ttl=100)
    short.add_msgs(turn("q", "a"))
    await short.save()
    assert 90 < await on.redis.ttl(short.key) <= 100
    shared = [store.keys.entries, store.keys.parents, store.keys.index, store.keys.expiry]
    assert all(90 < ttl <= 100 for ttl in [await on.redis.ttl(key) for key in shared])
    longer = session_of(on, "long", ttl=1000)
    longer.add_msgs(turn("q", "a"))
    await longer.save()
    assert all(900 < ttl <= 1000 for ttl in [await on.redis.ttl(key) for key in shared])
    kept = session_of(on, "kept")
    kept.add_msgs(turn("q", "a"))
    await kept.save()
    assert [await on.redis.ttl(key) for key in [kept.key, *shared]] == [-1] * 5, "kept until deleted"


async def test_every_key_of_a_users_conversations_shares_its_hash_slot(on: Runtime) -> None:
    if not isinstance(on.redis, RedisCluster):
        pytest.skip("hash tags are for Redis Cluster")
    store = store_of(on)
    keys = [store.keys.record("s1"), store.keys.record("s2"), store.keys.entries, store.keys.parents]
    keys += [store.keys.index, store.keys.expiry, on.keys(scope_id=1, user_id=1, session_id="s1").stream]
    assert len({key_slot(key.encode()) for key in keys}) == 1


async def test_a_rewritten_history_is_saved_with_the_replaced_one_kept_as_a_branch(on: Runtime) -> None:
    session = session_of(on)
    session.add_msgs([*turn("one", "1"), *turn("two", "2")])
    await session.save()
    session.msgs = [*session.msgs[:2], *turn("two, edited", "2'")]  # not an extension: a rewrite
    await session.save()
    store = store_of(on)
    conversation = await store.load("s1")
    assert conversation is not None
    assert texts(conversation.messages) == ["one", "1", "two, edited", "2'"]
    record = await store.read_record("s1")
    assert record is not None
    [tip] = record.branches
    assert texts([entry.message for entry in await store.read_history(tip)]) == ["one", "1", "two", "2"]

    unloaded = session_of(on)  # saved without a load: its messages become the history, as before
    unloaded.msgs = turn("fresh", "start")
    await unloaded.save()
    await session.load()
    assert texts(session.msgs) == ["fresh", "start"]
