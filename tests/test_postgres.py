"""`PostgresConversationStore` and `PostgresSession` on the real PostgreSQL: one user's conversations in tables."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool
from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import ConversationConflict
from pydantic_ai.models.test import TestModel

from pydantic_ai_stream import ForeignScopeError, PostgresConversationStore, PostgresSession
from pydantic_ai_stream._store.postgres import postgres_pool
from support import texts, turn


def store_of(pool: AsyncConnectionPool[Any], schema: str, user_id: int = 1) -> PostgresConversationStore:
    return PostgresConversationStore(pool=pool, scope_id=1, user_id=user_id, schema=schema)


def session_of(pool: AsyncConnectionPool[Any], schema: str, session_id: str = "s1") -> PostgresSession:
    return PostgresSession(pool=pool, schema=schema, scope_id=1, user_id=1, session_id=session_id)


async def entry_count(pool: AsyncConnectionPool[Any], schema: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(f"SELECT count(*) FROM {schema}.entries")  # type: ignore[arg-type]
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_pydantic_ai_and_the_session_continue_each_others_conversation(
    postgres: AsyncConnectionPool[Any], postgres_schema: str
) -> None:
    store = store_of(postgres, postgres_schema)
    agent = Agent(TestModel(custom_output_text="first answer"))
    result = await agent.run("first", conversation=Conversation(conversation_id="s1"))
    await store.save(result, scope="1:1")

    session = session_of(postgres, postgres_schema)
    await session.load()
    assert texts(session.msgs) == ["first", "first answer"]
    session.add_msgs(turn("second", "second answer"))
    await session.save()

    conversation = await store.load("s1", scope="1:1")
    assert conversation is not None
    assert texts(conversation.messages) == ["first", "first answer", "second", "second answer"]
    assert conversation.usage.requests == 2
    await store.save(await agent.run("third", conversation=conversation))
    await session.load()
    assert len(session.msgs) == 6
    assert await store.load("s1", scope="1:2") is None, "another scope does not see it"
    assert await store_of(postgres, postgres_schema, user_id=2).load("s1") is None, "nor another user's store"
    [record] = await store.list_conversations()
    assert (record.conversation_id, record.scope) == ("s1", "1:1")
    assert await store.list_conversations(scope="9:9") == []


async def test_of_two_concurrent_saves_of_a_conversation_one_wins_the_other_conflicts(
    postgres: AsyncConnectionPool[Any], postgres_schema: str
) -> None:
    first = session_of(postgres, postgres_schema)
    first.add_msgs(turn("hi", "hello"))
    await first.save()
    a, b = session_of(postgres, postgres_schema), session_of(postgres, postgres_schema)
    await asyncio.gather(a.load(), b.load())
    a.add_msgs(turn("from a", "ok a"))
    b.add_msgs(turn("from b", "ok b"))
    outcomes = await asyncio.gather(a.save(), b.save(), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["ConversationConflict", "NoneType"]
    won = a if outcomes[0] is None else b
    stored = session_of(postgres, postgres_schema)
    await stored.load()
    assert texts(stored.msgs) == texts(won.msgs)
    assert await entry_count(postgres, postgres_schema) == 4, "the loser's messages were not stored"

    # Two first saves of a new conversation: one creates it.
    new = [session_of(postgres, postgres_schema, "new") for _ in range(2)]
    for i, session in enumerate(new):
        await session.load()
        session.add_msgs(turn(f"q{i}", f"a{i}"))
    outcomes = await asyncio.gather(*(s.save() for s in new), return_exceptions=True)
    assert sum(isinstance(o, ConversationConflict) for o in outcomes) == 1


async def test_a_fork_shares_the_history_it_keeps_within_the_user(
    postgres: AsyncConnectionPool[Any], postgres_schema: str
) -> None:
    store = store_of(postgres, postgres_schema)
    session = session_of(postgres, postgres_schema)
    session.add_msgs([*turn("one", "1"), *turn("two", "2")])
    await session.save()
    fork = await store.fork("s1", at=2, new_conversation_id="f1")
    assert texts(fork.messages) == ["one", "1"]
    assert await entry_count(postgres, postgres_schema) == 4, "shared, not copied"
    forked = session_of(postgres, postgres_schema, "f1")
    await forked.load()
    forked.add_msgs(turn("other two", "2'"))
    await forked.save()

    with pytest.raises(ForeignScopeError):
        await store.fork("s1", new_conversation_id="f2", scope="1:2")

    await store.delete("s1")
    assert await store.load("s1") is None
    await forked.load()
    assert texts(forked.msgs) == ["one", "1", "other two", "2'"], "the fork keeps the history it shares"
    assert await entry_count(postgres, postgres_schema) == 4, "the original's own turn is deleted"
    await store.delete("f1")
    assert await entry_count(postgres, postgres_schema) == 0, "no message is left"


async def test_a_history_of_1000_messages_loads_in_one_query(postgres_url: str, postgres_schema: str) -> None:
    async with postgres_pool(postgres_url, schema=postgres_schema, max_size=1) as pool:
        session = session_of(pool, postgres_schema)
        for i in range(500):
            session.add_msgs(turn(f"q{i}", f"a{i}"))
        await session.save()
        with tempfile.TemporaryFile("w+") as trace:
            async with pool.connection() as conn:  # the pool's one connection: every call below uses it
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

            def round_trips() -> int:
                """Round trips since the last call: the client's `Sync` (extended protocol) or `Query` messages."""
                trace.flush()
                os.fsync(trace.fileno())
                trace.seek(0)
                lines = trace.read().splitlines()
                trace.seek(0)
                trace.truncate()
                return sum(line.startswith("F") and line.split("\t")[2] in ("Sync", "Query") for line in lines)

            round_trips()
            loaded = session_of(pool, postgres_schema)
            await loaded.load()
            assert len(loaded.msgs) == 1000
            assert texts(loaded.msgs)[-2:] == ["q499", "a499"]
            assert round_trips() == 1, "one query: the record and its whole history"

            conversation = await store_of(pool, postgres_schema).load("s1")
            assert conversation is not None
            assert len(conversation.messages) == 1000
            assert round_trips() == 2, "pydantic-ai's load: the record, then the history in one query"
            recent = await store_of(pool, postgres_schema).load("s1", limit=3)
            assert recent is not None
            assert texts(recent.messages) == ["a498", "q499", "a499"]
            round_trips()

            loaded.add_msgs(turn("q500", "a500"))
            await loaded.save()
            assert round_trips() == 1, "the save appends in one statement"
            async with pool.connection() as conn:
                conn.pgconn.untrace()


async def test_the_schema_is_created_once_and_versioned(postgres_url: str, postgres_schema: str) -> None:
    async with AsyncConnectionPool(postgres_url, min_size=3, kwargs={"autocommit": True}, open=False) as pool:
        versions = await asyncio.gather(
            *(PostgresConversationStore.migrate(pool, schema=postgres_schema) for _ in range(3))
        )
        assert versions == [1, 1, 1]
        assert await PostgresConversationStore.migrate(pool, schema=postgres_schema) == 1
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(f"SELECT version FROM {postgres_schema}.schema_version").fetchall()  # type: ignore[arg-type]
    assert rows == [(1,)]
