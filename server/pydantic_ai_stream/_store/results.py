"""What the store's scripts answer: their return codes as enums, their replies as named tuples.

A code's number is written here only: the scripts spell it `$OpenState.OPENED` and the loader fills it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any, NamedTuple, TypeAlias

from .._core.entry import Entry

__all__ = [
    "ActiveRun",
    "ActiveState",
    "CancelState",
    "Enqueue",
    "Held",
    "LeaseState",
    "OpenState",
    "PendingEntry",
    "Recovered",
    "Recovery",
    "Renewal",
    "RespondState",
    "WaitState",
]


class OpenState(IntEnum):
    """What opening a run found."""

    BUSY = 0
    """Another run holds the session: nothing was written."""
    OPENED = 1
    """The run took the session and its `begin` is written."""
    EXISTS = 2
    """A run with this id is live or ended (its stream still kept): nothing was written."""
    QUEUED = 3
    """A run with this id waits in the run queue: nothing was written."""
    FULL = 4
    """The scope has as many runs queued as it may: nothing was written."""


class CancelState(IntEnum):
    """What a cancel found."""

    NONE = 0
    """No run, or one already asked to stop."""
    SIGNALLED = 1
    """A running run was asked to stop (its process stops it at once)."""
    ENDED = 2
    """A queued run was ended on the spot (`error` canceled + `end`)."""
    ALREADY = 3
    """The run named was cancelled already (by this very cancel, if it is a retry whose reply was lost)."""


class LeaseState(IntEnum):
    """What a lease renewal found; also whether a fenced write (checkpoint, hand-back) found its lease."""

    LOST = 0
    HELD = 1
    CANCEL_REQUESTED = 2


class WaitState(IntEnum):
    """What putting a run behind the session's run found."""

    NO_RUN = 0
    """The session has no run to wait for (it ended meanwhile): start this one instead."""
    WAITING = 1
    """The run waits now."""
    ALREADY = 2
    """The run waited already (a re-sent call)."""


class RespondState(IntEnum):
    """What answering a waiting run's deferred calls found."""

    NOT_FOUND = 0
    """The session never had this run (within the stream retention)."""
    NOT_WAITING = 1
    """The run does not wait for input: it runs, ended, or its wait expired."""
    HELD = 2
    """The answers are kept; other calls still have none."""
    CONTINUED = 3
    """Every call has an answer: the run is queued to go on (also to a retry of those answers)."""
    UNKNOWN_CALL = 4
    """A call id the run does not wait on: nothing was written."""
    WRONG_KIND = 5
    """An approval for a call that waits for a result, or the reverse: nothing was written."""
    CONFLICT = 6
    """A call already has another answer: nothing was written."""


class Recovery(IntEnum):
    """What taking over a durable run found, when it took nothing over (else the reply is the attempt, > 0)."""

    HELD = -1
    """A worker still holds its flag."""
    NOTHING = 0
    """Nothing to resume: the run ended (or, out of attempts, was ended as lost)."""


class ActiveState(IntEnum):
    """What a listing of the active sessions found of one session."""

    GONE = 0
    """No run: dropped from the active set."""
    LIVE = 1
    CANCELLING = 2
    """Asked to stop; also a durable run between two workers marked cancelled (the next one ends it)."""
    QUEUED = 3
    RESUMING = 4
    """A durable run between two workers (its worker died or handed it back; the next has not taken it over)."""
    WAITING = 5
    """Waits for answers to its deferred tool calls (no worker holds it)."""


class Recovered(NamedTuple):
    """A durable run taken over from a worker whose lease lapsed."""

    attempt: int
    token: str
    """The lease's token of this attempt, `<run id>:<attempt>`: the flag's value while it holds it."""
    begin: Entry
    marker_id: str
    """The `resumed` event that says where the stream goes on (the stream's last entry when `cancelled`)."""
    cancelled: bool = False
    """The run was cancelled while its worker was gone: this attempt ends it (its flag says so), not resume it."""


class Held(NamedTuple):
    """A durable run's flag still held by a worker (alive, or dead with its lease not yet lapsed)."""

    left_ms: int
    """How long the lease lasts unless it is renewed."""


class Enqueue(NamedTuple):
    """The job to add to the run queue in the same script that opens the run (one Redis, not a cluster)."""

    queue: str
    """The scope's job stream (see `add_job`)."""
    queued: str
    """The scope's set of queued runs."""
    member: str
    """The run in that set."""
    limit: int
    """Runs the scope may have queued."""
    fields: Mapping[str, str]
    """The job."""
    scopes: str
    """The queue's scopes with jobs waiting, its turn counter and its ready stream (see `add_job`)."""
    turn: str
    ready: str


class Renewal(NamedTuple):
    """What renewing a run's lease found."""

    state: LeaseState
    waiting: list[str]
    """The ids of the runs waiting behind it (their wait extended with it)."""


class ActiveRun(NamedTuple):
    """A session with a run queued or running (not being cancelled)."""

    session_id: str
    run_id: str
    queued: bool
    """Waiting for a worker; else running."""
    attempt: int = 1
    """Which attempt runs it (more than 1 once a worker died and another resumed it); of a run `resuming`,
    the attempt that ran last."""
    resuming: bool = False
    """Queued again: its worker died or handed it back, and another worker takes it over as its next attempt."""
    waiting: bool = False
    """Waits for answers to its deferred tool calls (`Respond`); no worker holds it."""
    agent: str = ""
    """The agent it is of, as its `begin` names it ("" once its `begin` was trimmed away)."""
    started_ms: int = 0
    """When it began (its `begin`'s ms since the Unix epoch; 0 if not known)."""


PendingEntry: TypeAlias = tuple[str, str, Mapping[str, Any] | None]
"""An entry to write: `(type, origin, body)`."""
