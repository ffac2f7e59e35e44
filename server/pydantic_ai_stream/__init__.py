"""Production runtime for pydantic-ai agents: structured events in Redis Streams, sessions, cancellation."""

from .deps import Deps
from .errors import (
    AgxCanceledError,
    CursorExpiredError,
    InvalidIdError,
    LeaseLostError,
    PydanticAIStreamError,
    RunExistsError,
    SessionBusyError,
)
from .events import EventMapper, nodes_from_msgs
from .runner import q, run, start_run
from .session import RedisSession, Session
from .settings import Settings, settings

__all__ = [
    "AgxCanceledError",
    "CursorExpiredError",
    "Deps",
    "EventMapper",
    "InvalidIdError",
    "LeaseLostError",
    "PydanticAIStreamError",
    "RedisSession",
    "RunExistsError",
    "Session",
    "SessionBusyError",
    "Settings",
    "nodes_from_msgs",
    "q",
    "run",
    "settings",
    "start_run",
]
