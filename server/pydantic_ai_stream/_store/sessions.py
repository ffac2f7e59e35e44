"""Session persistence: the conversation a run continues and saves."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import ConversationEntry, ConversationRecord
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.usage import RunUsage

from .._core.events import StoredNode, nodes_from_msgs
from .._core.settings import Configured, Settings
from .conversations import RedisConversationStore, UserConversationStore
from .redis import AsyncRedis, is_cluster

__all__ = ["RedisSession", "Session", "SessionOf", "StoredSession"]


class SessionOf(Protocol):
    """What a session's `of` reads of a `Deps`: whose session it is, on which client and runtime."""

    redis: AsyncRedis
    user_id: int
    session_id: str

    @property
    def runtime(self) -> Configured | None: ...

    def get_scope_id(self) -> int: ...

    def get_settings(self) -> Settings: ...


@dataclass(kw_only=True)
class Session(ABC):
    """A conversation's messages; subclasses say where they live (`load`/`save`)."""

    msgs: list[ModelMessage] = field(default_factory=list)

    @abstractmethod
    async def load(self) -> None:
        """Fill `msgs` from storage (leave it empty for a new session)."""

    @abstractmethod
    async def save(self) -> None:
        """Write `msgs` to storage."""

    def add_msgs(self, msgs: Sequence[ModelMessage]) -> None:
        """Append messages (a run's new ones) to the conversation."""
        self.msgs.extend(msgs)

    def msgs_to_json(self) -> bytes:
        """The conversation as JSON."""
        return ModelMessagesTypeAdapter.dump_json(self.msgs)

    def msgs_from_json(self, data: bytes | str) -> None:
        """Replace the conversation with messages parsed from JSON."""
        self.msgs = ModelMessagesTypeAdapter.validate_json(data)

    def get_user_prompt(self) -> str:
        """The text of the prompt that opened the conversation (a title), or `"No title"`."""
        first = self.msgs[0] if self.msgs else None
        if isinstance(first, ModelRequest):
            for part in first.parts:
                if isinstance(part, UserPromptPart):
                    return part.content if isinstance(part.content, str) else "No title"
        return "No title"

    @staticmethod
    def nodes_from_msgs(msgs: Sequence[ModelMessage] | Sequence[dict[str, Any]] | bytes | str) -> list[StoredNode]:
        """Rebuild the node/part structure of stored messages, shaped like the live events."""
        return nodes_from_msgs(msgs)


@dataclass(kw_only=True)
class StoredSession(Session):
    """A session kept in its user's pydantic-ai `ConversationStore`: conversation `session_id`, scope
    `"<scope_id>:<user_id>"`, so pydantic-ai's own adapters (`store.load(session_id)`) load what a run saved,
    and a run continues what they saved.

    `load` reads the record and the whole history in one round trip; `save` appends the messages added since
    (one round trip), checked against the revision it loaded: `ConversationConflict` if the conversation was
    saved by someone else meanwhile. A history that was rewritten rather than extended (or a session saved
    without a `load`) is saved through `ConversationStore.save`, which keeps the history it replaces as a branch.
    """

    scope_id: int
    user_id: int
    session_id: str
    usage: RunUsage = field(default_factory=RunUsage)
    """The conversation's usage: as stored, plus the requests, tokens and successful tool calls of the
    messages `add_msgs` added."""
    _loaded: tuple[ConversationRecord | None, list[ConversationEntry]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """The record and history of the last `load` or `save`; `None` before either."""

    @property
    @abstractmethod
    def store(self) -> UserConversationStore:
        """The user's conversation store."""

    async def load(self) -> None:
        """Read the conversation; a session never saved starts empty."""
        loaded = await self.store.read(self.session_id)
        record, history = loaded if loaded is not None else (None, [])
        self._loaded = record, history
        self.msgs = [entry.message for entry in history]
        self.usage = deepcopy(record.usage) if record is not None else RunUsage()

    def add_msgs(self, msgs: Sequence[ModelMessage]) -> None:
        """Append messages (a run's new ones) to the conversation, and their usage to `usage`."""
        super().add_msgs(msgs)
        for message in msgs:
            if isinstance(message, ModelResponse):
                self.usage.incr(message.usage)
                self.usage.requests += 1
            else:
                self.usage.tool_calls += sum(
                    isinstance(part, ToolReturnPart) and part.outcome == "success" for part in message.parts
                )

    async def save(self) -> None:
        """Append the messages added since `load` (or store `msgs` as the conversation's history)."""
        store = self.store
        if self._loaded is None or not _extends(self.msgs, self._loaded[1]):
            await self._save_rewritten(store)
            return
        record, stored = self._loaded
        if record is not None and len(self.msgs) == len(stored) and record.usage == self.usage:
            return  # nothing to save
        parent = record.head_id if record is not None else None
        new_entries: list[ConversationEntry] = []
        for message in self.msgs[len(stored) :]:
            new_entries.append(ConversationEntry(parent_id=parent, message=message))
            parent = new_entries[-1].id
        updated = ConversationRecord(
            conversation_id=self.session_id,
            head_id=parent,
            usage=deepcopy(self.usage),
            # A conversation that goes on answers what it was waiting on (or leaves it behind).
            deferred_tool_requests=record.deferred_tool_requests if record is not None and not new_entries else None,
            scope=store.scope,
            forked_from=record.forked_from if record is not None else None,
            forked_at=record.forked_at if record is not None else None,
            branches=list(record.branches) if record is not None else [],
        )
        await store.write_record(
            updated, new_entries=new_entries, expected_revision=record.revision if record is not None else None
        )
        self._loaded = updated, [*stored, *new_entries]

    async def _save_rewritten(self, store: UserConversationStore) -> None:
        """Save `msgs` as the whole history through pydantic-ai's `save`: it stores what differs from the stored
        history as a branch, keeping the replaced one."""
        if self._loaded is not None:
            record = self._loaded[0]
        else:
            record = await store.read_record(self.session_id)
        conversation = Conversation(
            conversation_id=self.session_id,
            messages=list(self.msgs),
            usage=deepcopy(self.usage),
            deferred_tool_requests=record.deferred_tool_requests if record is not None else None,
            revision=record.revision if record is not None else None,
        )
        await store.save(conversation, scope=store.scope)
        await self.load()


def _extends(msgs: Sequence[ModelMessage], stored: Sequence[ConversationEntry]) -> bool:
    """Whether `msgs` starts with the stored messages themselves (the objects `load` made)."""
    return len(msgs) >= len(stored) and all(m is entry.message for m, entry in zip(msgs, stored, strict=False))


@dataclass(kw_only=True)
class RedisSession(StoredSession):
    """A session kept in Redis by `RedisConversationStore`: its record at
    `{prefix}:{scope_id}:{user_id}:{session_id}:msgs`, its messages in the user's hashes (see README "Keys").

    A conversation the previous release stored there (a JSON list of messages) loads as before, and is
    converted when first read.
    """

    redis: AsyncRedis
    ttl: int | None = None
    """Seconds to keep the conversation after each save; `None` keeps it until deleted."""
    runtime: Configured | None = None
    """Whose key prefix it uses (a `Runtime`); `None`: `settings`'."""
    settings: Settings | None = None
    """The key prefix's settings when no `runtime` is given; `None`: read from `PYDANTIC_AI_STREAM_*`."""

    @classmethod
    def of(cls, deps: SessionOf, *, ttl: int | None = None) -> RedisSession:
        """The conversation of `deps`'s session, on its client and runtime."""
        return cls(
            redis=deps.redis,
            runtime=deps.runtime,
            settings=deps.get_settings(),  # a deps without a runtime: the default runtime's, as its streams
            scope_id=deps.get_scope_id(),
            user_id=deps.user_id,
            session_id=deps.session_id,
            ttl=ttl,
        )

    @property
    def store(self) -> RedisConversationStore:
        """The user's conversations in Redis, under this session's key prefix."""
        return RedisConversationStore(
            redis=self.redis,
            scope_id=self.scope_id,
            user_id=self.user_id,
            settings=self._settings,
            ttl=self.ttl,
        )

    @property
    def key(self) -> str:
        """Where the conversation's record is stored."""
        keys = self._settings.session_keys(
            cluster=is_cluster(self.redis), scope_id=self.scope_id, user_id=self.user_id, session_id=self.session_id
        )
        return keys.msgs

    @property
    def _settings(self) -> Settings:
        if self.runtime is not None:
            return self.runtime.settings
        return self.settings if self.settings is not None else Settings()
