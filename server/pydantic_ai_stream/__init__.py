"""Production runtime for pydantic-ai agents: structured events in Redis Streams, sessions, cancellation."""

from .deps import Deps
from .errors import (
    AgxCanceledError,
    CursorAheadError,
    CursorExpiredError,
    InvalidIdError,
    LeaseLostError,
    ListenTimeoutError,
    PydanticAIStreamError,
    RunExistsError,
    SessionBusyError,
    StreamNotFoundError,
)
from .events import EventMapper, nodes_from_msgs
from .runner import q, run, start_run
from .runtime import Runtime
from .session import RedisSession, Session
from .settings import Settings, settings

__all__ = [
    "AgxCanceledError",
    "CursorAheadError",
    "CursorExpiredError",
    "Deps",
    "EventMapper",
    "InvalidIdError",
    "LeaseLostError",
    "ListenTimeoutError",
    "PydanticAIStreamError",
    "RedisSession",
    "RunExistsError",
    "Runtime",
    "Session",
    "SessionBusyError",
    "Settings",
    "StreamNotFoundError",
    "nodes_from_msgs",
    "q",
    "run",
    "settings",
    "start_run",
]
