"""Production runtime for pydantic-ai agents: structured events in Redis Streams, sessions, cancellation."""

from typing import TYPE_CHECKING, Any

from ._exports import first_use

# Past the published 0.1.1 (the code base this one replaces), so a `>=0.2` requirement never installs that.
__version__ = "0.2.0"

if TYPE_CHECKING:
    from ._core.deferred import InputCall, InputRequired, Responded, ToolAnswer
    from ._core.entry import Entry
    from ._core.errors import (
        AgentNotAllowedError,
        CursorAheadError,
        CursorExpiredError,
        ForeignScopeError,
        InvalidIdError,
        InvalidRequestError,
        LeaseLostError,
        ListenTimeoutError,
        NotWaitingError,
        PydanticAIStreamError,
        QueueFullError,
        RunExistsError,
        RunNotFoundError,
        SessionBusyError,
        ShuttingDownError,
        StreamNotFoundError,
        UnknownAgentError,
    )
    from ._core.events import (
        Answer,
        EventBody,
        EventBodyTypeAdapter,
        EventMapper,
        NodeBegin,
        NodeEnd,
        PartDelta,
        PartFields,
        PartStart,
        Resumed,
        StoredNode,
        nodes_from_msgs,
    )
    from ._core.inputs import Attachment, AttachmentKind
    from ._core.keys import ConversationKeys, SessionKeys
    from ._core.metrics import Metrics, RunReport
    from ._core.settings import Configured, Settings
    from ._core.submission import BusyPolicy, RunOptions, Submitted
    from ._durable.checkpoint import RETRY_SAFE, UNKNOWN_OUTCOME
    from ._edges.telemetry import Telemetry
    from ._read.handle import ListenOptions, SessionHandle, SessionOwner, live_sessions
    from ._runtime.compat import AgxCanceledError, q, settings
    from ._runtime.deps import Deps
    from ._runtime.loop import run, start_run
    from ._runtime.runtime import Runtime
    from ._store.conversations import RedisConversationStore, UserConversationStore
    from ._store.postgres import PostgresConversationStore, PostgresSession
    from ._store.results import ActiveRun, CancelState
    from ._store.sessions import RedisSession, Session, SessionOf, StoredSession

__all__ = [
    "RETRY_SAFE",
    "UNKNOWN_OUTCOME",
    "ActiveRun",
    "AgentNotAllowedError",
    "AgxCanceledError",
    "Answer",
    "Attachment",
    "AttachmentKind",
    "BusyPolicy",
    "CancelState",
    "Configured",
    "ConversationKeys",
    "CursorAheadError",
    "CursorExpiredError",
    "Deps",
    "Entry",
    "EventBody",
    "EventBodyTypeAdapter",
    "EventMapper",
    "ForeignScopeError",
    "InputCall",
    "InputRequired",
    "InvalidIdError",
    "InvalidRequestError",
    "LeaseLostError",
    "ListenOptions",
    "ListenTimeoutError",
    "Metrics",
    "NodeBegin",
    "NodeEnd",
    "NotWaitingError",
    "PartDelta",
    "PartFields",
    "PartStart",
    "PostgresConversationStore",
    "PostgresSession",
    "PydanticAIStreamError",
    "QueueFullError",
    "RedisConversationStore",
    "RedisSession",
    "Responded",
    "Resumed",
    "RunExistsError",
    "RunNotFoundError",
    "RunOptions",
    "RunReport",
    "Runtime",
    "Session",
    "SessionBusyError",
    "SessionHandle",
    "SessionKeys",
    "SessionOf",
    "SessionOwner",
    "Settings",
    "ShuttingDownError",
    "StoredNode",
    "StoredSession",
    "StreamNotFoundError",
    "Submitted",
    "Telemetry",
    "ToolAnswer",
    "UnknownAgentError",
    "UserConversationStore",
    "live_sessions",
    "nodes_from_msgs",
    "q",
    "run",
    "settings",
    "start_run",
]


_COMPAT = ("AgxCanceledError", "q", "settings")
"""The published API's process-wide names and error alias: every other exported error is from `_core.errors`."""
# Each module's public names, imported on first use: importing `pydantic_ai_stream.client` (the CLI's `ls`,
# `cancel`, `listen`) then loads no pydantic-ai, which alone takes a second.
_LAZY = {
    "._runtime.deps": ("Deps",),
    "._core.errors": tuple(name for name in __all__ if name.endswith("Error") and name not in _COMPAT),
    "._core.events": ("EventBody", "EventBodyTypeAdapter", "EventMapper", "StoredNode", "nodes_from_msgs"),
    "._read.handle": ("SessionHandle",),
    "._runtime.compat": _COMPAT,
    "._store.postgres": ("PostgresConversationStore", "PostgresSession"),
    "._durable.checkpoint": ("RETRY_SAFE", "UNKNOWN_OUTCOME"),
    "._runtime.loop": ("run", "start_run"),
    "._runtime.runtime": ("Runtime",),
    "._store.sessions": ("RedisSession", "Session", "StoredSession"),
    "._core.settings": ("Settings",),
    "._store.conversations": ("RedisConversationStore",),
    "._edges.telemetry": ("Telemetry",),
}
# What the names above take and return (and `live_sessions`, which returns `ActiveRun`): named without a
# private import by users and tests alike.
_LAZY_TYPES = {
    "._core.entry": ("Entry",),
    "._core.deferred": ("InputCall", "InputRequired", "Responded", "ToolAnswer"),
    "._core.events": ("Answer", "NodeBegin", "NodeEnd", "PartDelta", "PartFields", "PartStart", "Resumed"),
    "._core.inputs": ("Attachment", "AttachmentKind"),
    "._core.keys": ("ConversationKeys", "SessionKeys"),
    "._core.metrics": ("Metrics", "RunReport"),
    "._core.settings": ("Configured",),
    "._core.submission": ("BusyPolicy", "RunOptions", "Submitted"),
    "._read.handle": ("ListenOptions", "SessionOwner", "live_sessions"),
    "._store.conversations": ("UserConversationStore",),
    "._store.results": ("ActiveRun", "CancelState"),
    "._store.sessions": ("SessionOf",),
}
_MODULES = {name: module for table in (_LAZY, _LAZY_TYPES) for module, names in table.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use; the PostgreSQL names need the `postgres` extra."""
    try:
        return first_use(globals(), name, _MODULES)
    except ImportError as e:
        if _MODULES[name] != "._store.postgres":
            raise
        raise ImportError(f"{name} needs the postgres extra: pip install 'pydantic-ai-stream[postgres]>=0.2'") from e


def __dir__() -> list[str]:
    """The public names too, before their first use."""
    return sorted({*globals(), *__all__})
