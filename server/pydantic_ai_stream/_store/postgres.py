"""Conversations in PostgreSQL (the `postgres` extra): `PostgresConversationStore` and `PostgresSession`.

Tables, in their own schema (`pydantic_ai_stream` by default), created or migrated by `migrate` (a versioned
`schema_version` table; every server does it on start, one at a time):

- `entries`: one row per stored message, `(scope, id)`, its `parent_id` (the entry before it; a foreign
  key), and the `message` as JSON.
- `conversations`: one row per conversation, `(scope, conversation_id)`, its `revision`, `head_id` (a
  foreign key into `entries`), `updated_at`, and the whole pydantic-ai `record` as JSON.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, LiteralString

from psycopg import errors, sql
from psycopg_pool import AsyncConnectionPool
from pydantic_ai.conversation_store import ConversationConflict, ConversationEntry, ConversationRecord
from pydantic_ai.messages import ModelMessagesTypeAdapter

from .._core.messages import encode_message
from .conversations import UserConversationStore, decode_record, encode_record, user_scope
from .sessions import SessionOf, StoredSession

__all__ = ["DEFAULT_SCHEMA", "PostgresConversationStore", "PostgresSession", "postgres_pool"]

DEFAULT_SCHEMA = "pydantic_ai_stream"

# Each version's statements, run once, in order, in the transaction that records it.
_MIGRATIONS: list[tuple[int, list[LiteralString]]] = [
    (
        1,
        [
            """CREATE TABLE {schema}.entries (
                scope text NOT NULL,
                id text NOT NULL,
                parent_id text,
                kind text NOT NULL DEFAULT 'message',
                message json NOT NULL,
                PRIMARY KEY (scope, id),
                FOREIGN KEY (scope, parent_id) REFERENCES {schema}.entries (scope, id)
            )""",
            "CREATE INDEX ON {schema}.entries (scope, parent_id)",
            """CREATE TABLE {schema}.conversations (
                scope text NOT NULL,
                conversation_id text NOT NULL,
                revision text NOT NULL,
                head_id text,
                updated_at timestamptz NOT NULL,
                record json NOT NULL,
                PRIMARY KEY (scope, conversation_id),
                FOREIGN KEY (scope, head_id) REFERENCES {schema}.entries (scope, id)
            )""",
            "CREATE INDEX ON {schema}.conversations (scope, updated_at DESC)",
            "CREATE INDEX ON {schema}.conversations (scope, head_id)",
        ],
    ),
]

# The history from entry %(head)s back to the first, at most %(limit)s entries (all if NULL), as `h` (n = 1 at
# the head).
_HISTORY = """
h AS (
    SELECT e.id, e.parent_id, e.message, 1 AS n FROM {schema}.entries e
    WHERE e.scope = %(scope)s AND e.id = {head}
    UNION ALL
    SELECT e.id, e.parent_id, e.message, h.n + 1 FROM {schema}.entries e JOIN h ON e.id = h.parent_id
    WHERE e.scope = %(scope)s AND (%(limit)s::int IS NULL OR h.n < %(limit)s::int)
)"""
# The history's ids, parents and messages (a JSON list), oldest first.
_AGGREGATE = """
SELECT array_agg(h.id ORDER BY h.n DESC), array_agg(h.parent_id ORDER BY h.n DESC),
    '[' || string_agg(h.message::text, ',' ORDER BY h.n DESC) || ']' FROM h"""


@dataclass(frozen=True)
class _Statements:
    """The store's SQL for one schema."""

    read: sql.Composed
    read_record: sql.Composed
    read_records: sql.Composed
    read_history: sql.Composed
    create: sql.Composed
    update: sql.Composed
    delete: sql.Composed


@cache
def _statements(schema: str) -> _Statements:
    def q(text: LiteralString, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(schema), **parts)

    head = sql.SQL("%(head)s")
    history = sql.SQL(_HISTORY).format(schema=sql.Identifier(schema), head=head)
    # Inserts the new entries (%(ids)s, %(parents)s, %(messages)s) if the record was written by `rec`.
    insert = """, ins AS (
        INSERT INTO {schema}.entries (scope, id, parent_id, message)
        SELECT %(scope)s, i, p, m::json
        FROM unnest(%(ids)s::text[], %(parents)s::text[], %(messages)s::text[]) AS n(i, p, m)
        WHERE EXISTS (SELECT 1 FROM rec)
    ) SELECT count(*) FROM rec"""
    return _Statements(
        read=q(
            "WITH RECURSIVE c AS (SELECT record, head_id FROM {schema}.conversations"
            " WHERE scope = %(scope)s AND conversation_id = %(id)s), {history}"
            " SELECT c.record::text, a.* FROM c, LATERAL ({aggregate}) a",
            history=sql.SQL(_HISTORY).format(schema=sql.Identifier(schema), head=sql.SQL("(SELECT head_id FROM c)")),
            aggregate=sql.SQL(_AGGREGATE),
        ),
        read_record=q(
            "SELECT record::text FROM {schema}.conversations WHERE scope = %(scope)s AND conversation_id = %(id)s"
        ),
        read_records=q(
            "SELECT record::text FROM {schema}.conversations WHERE scope = %(scope)s"
            " ORDER BY updated_at DESC LIMIT %(limit)s"
        ),
        read_history=q("WITH RECURSIVE {history} {aggregate}", history=history, aggregate=sql.SQL(_AGGREGATE)),
        create=q(
            "WITH rec AS (INSERT INTO {schema}.conversations"
            " (scope, conversation_id, revision, head_id, updated_at, record)"
            " VALUES (%(scope)s, %(id)s, %(revision)s, %(head)s, %(updated_at)s, %(record)s::json)"
            " ON CONFLICT (scope, conversation_id) DO NOTHING RETURNING 1)" + insert
        ),
        update=q(
            "WITH rec AS (UPDATE {schema}.conversations SET revision = %(revision)s, head_id = %(head)s,"
            " updated_at = %(updated_at)s, record = %(record)s::json"
            " WHERE scope = %(scope)s AND conversation_id = %(id)s AND revision = %(expected)s RETURNING 1)" + insert
        ),
        # Deletes the record, then every entry of the scope no other record's head or branch reaches.
        delete=q(
            """WITH RECURSIVE rec AS (
                DELETE FROM {schema}.conversations
                WHERE scope = %(scope)s AND conversation_id = %(id)s AND revision = %(expected)s RETURNING 1
            ), others AS (
                SELECT head_id, record FROM {schema}.conversations WHERE scope = %(scope)s AND conversation_id <> %(id)s
            ), tips AS (
                SELECT head_id AS id FROM others WHERE head_id IS NOT NULL
                UNION SELECT json_array_elements_text(record -> 'branches') FROM others
            ), reach AS (
                SELECT e.id, e.parent_id FROM {schema}.entries e JOIN tips t ON e.id = t.id WHERE e.scope = %(scope)s
                UNION
                SELECT e.id, e.parent_id FROM {schema}.entries e JOIN reach r ON e.id = r.parent_id
                WHERE e.scope = %(scope)s
            ), gone AS (
                DELETE FROM {schema}.entries e WHERE EXISTS (SELECT 1 FROM rec) AND e.scope = %(scope)s
                AND NOT EXISTS (SELECT 1 FROM reach r WHERE r.id = e.id) RETURNING 1
            ) SELECT (SELECT count(*) FROM rec), (SELECT count(*) FROM gone)"""
        ),
    )


class PostgresConversationStore(UserConversationStore):
    """One user's conversations in PostgreSQL, for pydantic-ai (`store.load(session_id)`) and `PostgresSession`.

    Give it a pool of autocommit connections (`postgres_pool` opens one): each call is then one statement,
    one round trip: `read` (the record and its whole history, a recursive query) and each write (the record,
    checked against its revision, and its new entries together). A load is two (the record, then its
    history).

    A fork shares the history it keeps, within the user; a fork into another user's scope is refused
    (`ForeignScopeError`), as in Redis: load it and save it with that user's store, which copies its
    messages. `delete` erases the conversation's record and every message no other record of the user
    reaches, a pass over the user's entries (deletes of one user take turns).
    """

    def __init__(
        self, *, pool: AsyncConnectionPool[Any], scope_id: int, user_id: int, schema: str = DEFAULT_SCHEMA
    ) -> None:
        self.pool = pool
        self.scope = user_scope(scope_id, user_id)
        self.schema = schema
        self._sql = _statements(schema)

    @classmethod
    async def migrate(cls, pool: AsyncConnectionPool[Any], *, schema: str = DEFAULT_SCHEMA) -> int:
        """Create the store's schema and tables, or bring them to this release's version; returns it.

        Servers starting together take turns (an advisory lock). Raises `RuntimeError` if the database's
        version is newer than this release knows."""
        latest = _MIGRATIONS[-1][0]
        name = sql.Identifier(schema)
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"pydantic_ai_stream:{schema}"])
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            await conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {}.schema_version (version integer NOT NULL)").format(name)
            )
            cursor = await conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version").format(name))
            row = await cursor.fetchone()
            current = row[0] if row is not None and row[0] is not None else 0
            if current > latest:
                raise RuntimeError(f"schema {schema!r} is at version {current}; this release knows up to {latest}")
            for version, statements in _MIGRATIONS:
                if version > current:
                    for statement in statements:
                        await conn.execute(sql.SQL(statement).format(schema=name))
                    await conn.execute(
                        sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(name), [version]
                    )
        return latest

    async def read(self, conversation_id: str) -> tuple[ConversationRecord, list[ConversationEntry]] | None:
        row = await self._one(self._sql.read, scope=self.scope, id=conversation_id, head=None, limit=None)
        if row is None:
            return None
        record, ids, parents, messages = row
        return decode_record(record), _entries(ids, parents, messages)

    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        row = await self._one(self._sql.read_record, scope=self.scope, id=conversation_id)
        return None if row is None else decode_record(row[0])

    async def read_records(self, *, scope: str | None = None, limit: int | None = None) -> Sequence[ConversationRecord]:
        if not self.sees(scope):
            return []
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self._sql.read_records, {"scope": self.scope, "limit": limit})
            return [decode_record(record) for (record,) in await cursor.fetchall()]

    async def read_history(self, head_id: str | None, *, limit: int | None = None) -> list[ConversationEntry]:
        """The entries up to `head_id` (the last `limit` of them) in one query."""
        if head_id is None or limit == 0:
            return []
        row = await self._one(self._sql.read_history, scope=self.scope, head=head_id, limit=limit)
        if row is None or row[0] is None:
            raise KeyError(head_id)
        return _entries(*row)

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        history = await self.read_history(entry_id, limit=1)
        return history[0]

    async def _write_owned(
        self, record: ConversationRecord, new_entries: Sequence[ConversationEntry], expected_revision: str | None
    ) -> None:
        params = {
            "scope": self.scope,
            "id": record.conversation_id,
            "revision": record.revision,
            "head": record.head_id,
            "updated_at": record.updated_at,
            "record": encode_record(record).decode(),
            "expected": expected_revision,
            "ids": [entry.id for entry in new_entries],
            "parents": [entry.parent_id for entry in new_entries],
            "messages": [encode_message(entry.message).decode() for entry in new_entries],
        }
        statement = self._sql.create if expected_revision is None else self._sql.update
        try:
            row = await self._one(statement, **params)
        except errors.ForeignKeyViolation:  # its head or an entry's parent was deleted meanwhile
            raise ConversationConflict(record.conversation_id) from None
        if row is None or row[0] != 1:
            raise ConversationConflict(record.conversation_id)

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        async with self.pool.connection() as conn:
            try:
                async with conn.transaction():
                    # Deletes of one user take turns: each then sees the records the one before it left.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{self.schema}:{self.scope}"])
                    cursor = await conn.execute(
                        self._sql.delete, {"scope": self.scope, "id": conversation_id, "expected": expected_revision}
                    )
                    row = await cursor.fetchone()
            except errors.ForeignKeyViolation:  # a fork of it was saved meanwhile: its entries are kept
                raise ConversationConflict(conversation_id) from None
        if row is None or row[0] != 1:
            raise ConversationConflict(conversation_id)

    async def _one(self, statement: sql.Composed, **params: Any) -> tuple[Any, ...] | None:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            row: tuple[Any, ...] | None = await cursor.fetchone()
            return row


def _entries(ids: list[str] | None, parents: list[str | None] | None, messages: str | None) -> list[ConversationEntry]:
    """Entries from the aggregated ids, parents and messages (a JSON list) of a history."""
    if not ids or parents is None or messages is None:
        return []
    return [
        ConversationEntry(id=entry_id, parent_id=parent, message=message)
        for entry_id, parent, message in zip(
            ids, parents, ModelMessagesTypeAdapter.validate_json(messages), strict=True
        )
    ]


@contextlib.asynccontextmanager
async def postgres_pool(
    url: str, *, schema: str = DEFAULT_SCHEMA, max_size: int = 10
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool of autocommit connections to `url` (`postgresql://...`), the store's schema migrated; closed on exit."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"sessions URL must be postgresql://..., got {url.split('://')[0]}://...")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=max_size, kwargs={"autocommit": True}, open=False
    )
    async with pool:
        await pool.wait()
        await PostgresConversationStore.migrate(pool, schema=schema)
        yield pool


@dataclass(kw_only=True)
class PostgresSession(StoredSession):
    """A session kept in PostgreSQL by `PostgresConversationStore` (`pydantic-ai-stream serve --sessions URL`)."""

    pool: AsyncConnectionPool[Any]
    """Autocommit connections to the database (`postgres_pool`), its schema migrated."""
    schema: str = DEFAULT_SCHEMA

    @classmethod
    def of(cls, deps: SessionOf, *, pool: AsyncConnectionPool[Any], schema: str = DEFAULT_SCHEMA) -> PostgresSession:
        """The conversation of `deps`'s session."""
        return cls(
            pool=pool, schema=schema, scope_id=deps.get_scope_id(), user_id=deps.user_id, session_id=deps.session_id
        )

    @property
    def store(self) -> PostgresConversationStore:
        """The user's conversations in PostgreSQL."""
        return PostgresConversationStore(
            pool=self.pool, scope_id=self.scope_id, user_id=self.user_id, schema=self.schema
        )
