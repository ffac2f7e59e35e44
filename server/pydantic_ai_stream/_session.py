"""Session persistence: the conversation a run continues and saves."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter, ModelRequest, UserPromptPart

from ._events import StoredNode, nodes_from_msgs
from ._redis import AsyncRedis

if TYPE_CHECKING:
    from ._deps import Deps
from ._runtime import Runtime, session_keys
from ._settings import settings

__all__ = ["RedisSession", "Session"]


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
class RedisSession(Session):
    """A session stored as JSON in Redis at `{prefix}:{scope_id}:{user_id}:{session_id}:msgs`."""

    redis: AsyncRedis
    scope_id: int
    user_id: int
    session_id: str
    ttl: int | None = None
    """Seconds to keep the conversation after each save; `None` keeps it until deleted."""
    runtime: Runtime | None = None
    """Whose key prefix it uses; `None`: `Runtime.default(redis)`'s (the process-wide `settings`)."""

    @classmethod
    def of(cls, deps: Deps, *, ttl: int | None = None) -> RedisSession:
        """The conversation of `deps`'s session, on its client and runtime."""
        return cls(
            redis=deps.redis,
            runtime=deps.runtime,
            scope_id=deps.get_scope_id(),
            user_id=deps.user_id,
            session_id=deps.session_id,
            ttl=ttl,
        )

    @property
    def key(self) -> str:
        """Where the conversation is stored."""
        config = self.runtime.settings if self.runtime is not None else settings
        keys = session_keys(
            config, self.redis, scope_id=self.scope_id, user_id=self.user_id, session_id=self.session_id
        )
        return keys.msgs

    async def load(self) -> None:
        """Read the conversation; a session never saved starts empty."""
        data = await self.redis.get(self.key)
        self.msgs = [] if data is None else ModelMessagesTypeAdapter.validate_json(data)

    async def save(self) -> None:
        """Write the conversation."""
        await self.redis.set(self.key, self.msgs_to_json(), ex=self.ttl)
