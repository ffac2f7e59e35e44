"""The exceptions this package raises, and what each means:

PydanticAIStreamError                 every error this package raises on purpose
├── AgxCanceledError                  the run was cancelled (`cancel()` from any process)
├── LeaseLostError                    the run lost its session's live flag: not a cancel, it must stop unsaved
├── UnknownAgentError (LookupError)   no hosted agent of that name
├── AgentNotAllowedError              the caller may not run that agent
├── InvalidRequestError (ValueError)  a request refused as it is (empty or over-long prompt)
├── ShuttingDownError                 the server takes no new runs
├── InvalidIdError (ValueError)       an id or prefix that could escape its key space
├── SessionBusyError                  the session has a live run; nothing was written
│   └── RunExistsError                a retry: that run was started already
├── CursorExpiredError                events after the cursor were trimmed
├── CursorAheadError                  the cursor is past the stream's newest event
├── ListenTimeoutError (TimeoutError) no event within the listen's timeout
├── StreamNotFoundError (LookupError) the session has no events
├── QueueFullError                    the scope's queue is at its bound
├── RunNotFoundError (LookupError)    the session never had that run
├── NotWaitingError                   the run does not wait for input (it runs, ended, expired)
└── ForeignScopeError (UserError)     a conversation of another scope was refused
"""

from __future__ import annotations

from pydantic_ai.exceptions import UserError

__all__ = [
    "AgentNotAllowedError",
    "AgxCanceledError",
    "CursorAheadError",
    "CursorExpiredError",
    "ForeignScopeError",
    "InvalidIdError",
    "InvalidRequestError",
    "LeaseLostError",
    "ListenTimeoutError",
    "NotWaitingError",
    "PydanticAIStreamError",
    "QueueFullError",
    "RunExistsError",
    "RunNotFoundError",
    "SessionBusyError",
    "ShuttingDownError",
    "StreamNotFoundError",
    "UnknownAgentError",
]


class PydanticAIStreamError(Exception):
    """Base class of every error this package raises on purpose."""


class AgxCanceledError(PydanticAIStreamError):
    """The run was cancelled (by `Deps.cancel()` from any process, or its task was cancelled). A run whose
    lease renewal found the lease lost is stopped through the same token, so it raises this too, its
    `__cause__` a `LeaseLostError` (and it is reported `lost`, not `cancelled`)."""


class UnknownAgentError(PydanticAIStreamError, LookupError):
    """The server hosts no agent of that name (gRPC NOT_FOUND)."""


class AgentNotAllowedError(PydanticAIStreamError):
    """The caller may not run that agent (gRPC PERMISSION_DENIED)."""


class InvalidRequestError(PydanticAIStreamError, ValueError):
    """A request the server refuses as it is, e.g. an empty or over-long prompt (gRPC INVALID_ARGUMENT)."""


class ShuttingDownError(PydanticAIStreamError):
    """The server is shutting down and takes no new runs; retry on another replica (gRPC UNAVAILABLE)."""


class InvalidIdError(PydanticAIStreamError, ValueError):
    """An id or key prefix that could escape its key space; nothing was written."""


class SessionBusyError(PydanticAIStreamError):
    """The session already has a live run; the new run was refused and nothing was written."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already has a live run")
        self.session_id = session_id


class RunExistsError(SessionBusyError):
    """The run id is that of the session's live run, or of its last run while its stream is kept: a retry.

    Nothing was started; `begin_event_id` is where the existing run's events begin.
    """

    def __init__(self, session_id: str, *, run_id: str, begin_event_id: str) -> None:
        super().__init__(session_id)
        self.args = (f"session {session_id!r} already has run {run_id!r}; it was not started again",)
        self.run_id = run_id
        self.begin_event_id = begin_event_id


class LeaseLostError(PydanticAIStreamError):
    """The run no longer holds its session's live flag (it expired while the process stalled): another run
    may own the session, so this one stops without saving. Not a cancel: nobody asked it to stop."""


class CursorExpiredError(PydanticAIStreamError):
    """A resume cursor points before the oldest entry still in the stream: events after it are gone."""

    def __init__(self, after: str, oldest: str) -> None:
        super().__init__(f"events after {after} were trimmed or belong to an older run (oldest kept: {oldest})")
        self.after = after
        self.oldest = oldest


class CursorAheadError(PydanticAIStreamError):
    """A resume cursor points after the stream's newest entry: no event of this stream has that id."""

    def __init__(self, after: str, newest: str) -> None:
        super().__init__(f"event id {after} is after the stream's newest event ({newest}); resume from an id it sent")
        self.after = after
        self.newest = newest


class ListenTimeoutError(PydanticAIStreamError, TimeoutError):
    """A listen ended early, before `end`: no event came within its `timeout` (the run may still be live)."""

    def __init__(self, timeout: float, last_id: str) -> None:
        super().__init__(f"no event for {timeout:g} s; resume after {last_id or 'the start'} to go on")
        self.timeout = timeout
        self.last_id = last_id


class StreamNotFoundError(PydanticAIStreamError, LookupError):
    """The session has no events: it never ran, or they expired, and none appeared within `wait`."""


class QueueFullError(PydanticAIStreamError):
    """The scope has as many runs waiting for a worker as it may: nothing was written; retry later."""

    def __init__(self, scope_id: int, limit: int) -> None:
        super().__init__(f"scope {scope_id} has {limit} runs waiting for a worker, its limit; retry later")
        self.scope_id = scope_id
        self.limit = limit


class ForeignScopeError(PydanticAIStreamError, UserError):
    """A conversation store holds one user's conversations: one of another scope (a fork across users, a
    save with another user's scope) was refused, and nothing was written."""

    def __init__(self, scope: str, other: str) -> None:
        super().__init__(
            f"this store holds the conversations of scope {scope!r}, not {other!r}: to give another user a copy, "
            "load the conversation and save it with that user's store"
        )
        self.scope = scope
        self.other = other


class RunNotFoundError(PydanticAIStreamError, LookupError):
    """The session has no run of that id (within the stream retention): gRPC NOT_FOUND."""


class NotWaitingError(PydanticAIStreamError):
    """The run does not wait for input (any more): it runs, ended, was cancelled or its wait expired; or a call
    already has another answer. Nothing was written (gRPC FAILED_PRECONDITION)."""
