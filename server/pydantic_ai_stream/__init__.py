"""Production runtime for pydantic-ai agents: structured events in Redis Streams, sessions, cancellation."""

from typing import TYPE_CHECKING, Any

from ._deps import Deps
from ._errors import (
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
from ._events import EventBody, EventBodyTypeAdapter, EventMapper, StoredNode, nodes_from_msgs
from ._handle import SessionHandle, q
from ._resume import RETRY_SAFE, UNKNOWN_OUTCOME
from ._run import run, start_run
from ._runtime import Runtime
from ._session import RedisSession, Session, StoredSession
from ._settings import Settings, settings
from ._store import RedisConversationStore
from ._telemetry import Telemetry

if TYPE_CHECKING:
    from ._postgres import PostgresConversationStore, PostgresSession

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


def __getattr__(name: str) -> Any:
    """The PostgreSQL names, imported on first use: they need the `postgres` extra (psycopg)."""
    if name in ("PostgresConversationStore", "PostgresSession"):
        try:
            from . import _postgres
        except ImportError as e:
            raise ImportError(f"{name} needs the postgres extra: pip install 'pydantic-ai-stream[postgres]'") from e
        return getattr(_postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
