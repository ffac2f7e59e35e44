"""Production runtime for pydantic-ai agents: structured events in Redis Streams, sessions, cancellation."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Past the published 0.1.1 (the code base this one replaces), so a `>=0.2` requirement never installs that.
__version__ = "0.2.0"

if TYPE_CHECKING:
    from ._core.errors import (
        AgentNotAllowedError,
        AgxCanceledError,
        CursorAheadError,
        CursorExpiredError,
        ForeignScopeError,
        InvalidIdError,
        InvalidRequestError,
        LeaseLostError,
        ListenTimeoutError,
        PydanticAIStreamError,
        QueueFullError,
        RunExistsError,
        SessionBusyError,
        ShuttingDownError,
        StreamNotFoundError,
        UnknownAgentError,
    )
    from ._core.events import EventBody, EventBodyTypeAdapter, EventMapper, StoredNode, nodes_from_msgs
    from ._core.settings import Settings, settings
    from ._durable.checkpoint import RETRY_SAFE, UNKNOWN_OUTCOME
    from ._edges.telemetry import Telemetry
    from ._read.handle import SessionHandle
    from ._runtime.deps import Deps
    from ._runtime.loop import run, start_run
    from ._runtime.runtime import Runtime, q
    from ._store.conversations import RedisConversationStore
    from ._store.postgres import PostgresConversationStore, PostgresSession
    from ._store.sessions import RedisSession, Session, StoredSession

__all__ = [
    "RETRY_SAFE",
    "UNKNOWN_OUTCOME",
    "AgentNotAllowedError",
    "AgxCanceledError",
    "CursorAheadError",
    "CursorExpiredError",
    "Deps",
    "EventBody",
    "EventBodyTypeAdapter",
    "EventMapper",
    "ForeignScopeError",
    "InvalidIdError",
    "InvalidRequestError",
    "LeaseLostError",
    "ListenTimeoutError",
    "PostgresConversationStore",
    "PostgresSession",
    "PydanticAIStreamError",
    "QueueFullError",
    "RedisConversationStore",
    "RedisSession",
    "RunExistsError",
    "Runtime",
    "Session",
    "SessionBusyError",
    "SessionHandle",
    "Settings",
    "ShuttingDownError",
    "StoredNode",
    "StoredSession",
    "StreamNotFoundError",
    "Telemetry",
    "UnknownAgentError",
    "nodes_from_msgs",
    "q",
    "run",
    "settings",
    "start_run",
]


# Each module's public names, imported on first use: importing `pydantic_ai_stream.client` (the CLI's `ls`,
# `cancel`, `listen`) then loads no pydantic-ai, which alone takes a second.
_LAZY = {
    "._runtime.deps": ("Deps",),
    "._core.errors": (
        "AgentNotAllowedError",
        "AgxCanceledError",
        "CursorAheadError",
        "CursorExpiredError",
        "ForeignScopeError",
        "InvalidIdError",
        "InvalidRequestError",
        "LeaseLostError",
        "ListenTimeoutError",
        "PydanticAIStreamError",
        "QueueFullError",
        "RunExistsError",
        "SessionBusyError",
        "ShuttingDownError",
        "StreamNotFoundError",
        "UnknownAgentError",
    ),
    "._core.events": ("EventBody", "EventBodyTypeAdapter", "EventMapper", "StoredNode", "nodes_from_msgs"),
    "._read.handle": ("SessionHandle",),
    "._store.postgres": ("PostgresConversationStore", "PostgresSession"),
    "._durable.checkpoint": ("RETRY_SAFE", "UNKNOWN_OUTCOME"),
    "._runtime.loop": ("run", "start_run"),
    "._runtime.runtime": ("Runtime", "q"),
    "._store.sessions": ("RedisSession", "Session", "StoredSession"),
    "._core.settings": ("Settings", "settings"),
    "._store.conversations": ("RedisConversationStore",),
    "._edges.telemetry": ("Telemetry",),
}
_MODULES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; the PostgreSQL names need the `postgres` extra."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(import_module(module, __name__), name)
    except ImportError as e:
        if module != "._store.postgres":
            raise
        raise ImportError(f"{name} needs the postgres extra: pip install 'pydantic-ai-stream[postgres]>=0.2'") from e
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names too, before their first use."""
    return sorted({*globals(), *__all__})
