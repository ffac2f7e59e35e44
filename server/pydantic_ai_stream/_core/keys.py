"""Redis key names, built in one place, and the checks that keep ids inside their key space."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from .errors import InvalidIdError

__all__ = [
    "MAX_ID_LENGTH",
    "ConversationKeys",
    "QueueKeys",
    "SessionKeys",
    "TaskKeys",
    "active_key",
    "cancel_channel",
    "check_id",
    "check_int_id",
    "check_prefix",
    "excerpt",
    "queue_key",
    "queue_wake_key",
    "queued_key",
    "ready_key",
    "run_id_or_new",
    "scope_jobs_key",
    "scopes_key",
    "turn_key",
    "user_prefix",
    "workers_key",
]

MAX_ID_LENGTH = 128
# Glob metacharacters, hash-tag braces, our separator and whitespace would let an id reach other keys.
_FORBIDDEN = re.compile(r"[:*?\[\]{}\s\\]")
_PREFIX_FORBIDDEN = re.compile(r"[*?\[\]{}\s\\]")
_ACTIVE_SUFFIX = "::active"


def excerpt(value: str, limit: int = 40) -> str:
    """`value` quoted for an error message, cut to `limit` characters: errors never echo unbounded input."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_id(name: str, value: object) -> str:
    """Return `value` if it is a safe id segment, else raise `InvalidIdError` naming `name`."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{name} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if match := _FORBIDDEN.search(value):
        raise InvalidIdError(
            f"{name} {excerpt(value)} contains {match.group()!r}; ids may not contain ':*?[]{{}}\\ or spaces"
        )
    return value


def run_id_or_new(run_id: str | None) -> str:
    """`run_id` checked, or a new one when `None`: the one place a run's id is made."""
    return check_id("run_id", run_id) if run_id is not None else uuid.uuid4().hex


def check_int_id(name: str, value: object) -> int:
    """Return `value` if it is an int (not a bool), else raise `InvalidIdError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidIdError(f"{name} must be an int, got {type(value).__name__}")
    return value


def check_prefix(value: str) -> str:
    """Return `value` if it can start every key: non-empty, no glob characters, braces or spaces."""
    if not value or len(value) > MAX_ID_LENGTH or _PREFIX_FORBIDDEN.search(value):
        raise InvalidIdError(f"redis prefix {value!r} must be 1-{MAX_ID_LENGTH} chars without *?[]{{}}\\ or spaces")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionKeys:
    """The keys of one session: its event stream, live flag, and its user's active-session set.

    Layout: stream `{prefix}:{scope_id}:{user_id}:{session_id}`, live flag `<stream>:live`, active set
    `{prefix}:{scope_id}:{user_id}::active` (the empty session segment cannot collide with a session).
    With hash tags (Redis Cluster) the user part is wrapped, `{pyaix:1:2}:s1`, so that all keys of a
    user share a slot and the package's scripts can touch them together.
    """

    scope_id: int
    user_id: int
    session_id: str
    stream: str
    live: str
    active: str
    msgs: str
    """Where `RedisSession` stores the conversation: its record (`ConversationKeys.record`)."""
    rollback: str
    """The id of a run cancelled to be rolled back: it must not save its messages."""
    durable: str
    """`<run id>:<attempt>` of the session's queued run while it is queued or running: a worker that
    finds its lease lapsed resumes it (and no listener ends it as lost meanwhile)."""
    checkpoint: str
    """A durable run's last checkpoint: its run id and the node it resumes from (a hash)."""
    checkpoint_msgs: str
    """The messages of that checkpoint, one JSON message per element (a list)."""
    waiting: str
    """Runs accepted behind the session's run (`enqueue`), first first: each starts when the one before ends."""
    input: str
    """A run's wait for input (a hash): its run id, node, deadline, the calls it waits on and their answers;
    kept past the run's end, so that a retried answer gets the first one's reply."""
    runs: str
    """The session's runs started within the stream retention (a hash: run id -> `begin` id), so that a retry
    of one is recognised after another run replaced its stream."""

    @classmethod
    def build(
        cls, *, prefix: str, scope_id: int, user_id: int, session_id: str, hash_tags: bool = False
    ) -> SessionKeys:
        """Check every segment and build the keys; raises `InvalidIdError` before any I/O."""
        user = user_prefix(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=hash_tags)
        stream = f"{user}:{check_id('session_id', session_id)}"
        return cls(
            scope_id=scope_id,
            user_id=user_id,
            session_id=session_id,
            stream=stream,
            live=f"{stream}:live",
            active=f"{user}{_ACTIVE_SUFFIX}",
            msgs=conversation_key(user, session_id),
            rollback=f"{stream}:rollback",
            durable=f"{stream}:run",
            checkpoint=f"{stream}:checkpoint",
            checkpoint_msgs=f"{stream}:checkpoint:msgs",
            waiting=f"{stream}:waiting",
            input=f"{stream}:input",
            runs=f"{stream}:runs",
        )

    def attachments(self, run_id: str) -> str:
        """The attachments of the session's run `run_id` from its submit until a worker adopts it (then they
        move into the `checkpoint` hash, which lives as long as the run): `<stream>:attachments:<run id>`."""
        return f"{self.stream}:attachments:{check_id('run_id', run_id)}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationKeys:
    """The keys of one user's conversations (`RedisConversationStore`), all in the user's hash slot.

    A conversation's record is `{prefix}:{scope_id}:{user_id}:{conversation_id}:msgs` (its session's
    `SessionKeys.msgs`); the user's messages, each stored once and shared by forks, are in two hashes.
    """

    user: str
    entries: str
    """Hash: entry id -> the entry's message (JSON)."""
    parents: str
    """Hash: entry id -> the id of the entry before it (empty for a history's first)."""
    index: str
    """Sorted set: conversation id -> when it was last saved (ms), to list conversations newest first."""
    expiry: str
    """Sorted set: conversation id -> when its record expires (ms, `inf` for never): the shared keys live as
    long as the last of them."""

    @classmethod
    def build(cls, *, prefix: str, scope_id: int, user_id: int, hash_tags: bool = False) -> ConversationKeys:
        """Check every segment and build the keys; raises `InvalidIdError` before any I/O."""
        user = user_prefix(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=hash_tags)
        return cls(
            user=user,
            entries=f"{user}::msgs:entries",
            parents=f"{user}::msgs:parents",
            index=f"{user}::msgs:index",
            expiry=f"{user}::msgs:expiry",
        )

    def record(self, conversation_id: str) -> str:
        """Where a conversation's record is: its session's `msgs` key."""
        return conversation_key(self.user, conversation_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskKeys:
    """The keys of one user's A2A tasks, all in the user's hash slot: `{prefix}:{scope_id}:{user_id}::a2a:tasks`
    (a sorted set of task ids by creation time, ms) and `...::a2a:task:<task id>` (a hash per task)."""

    user: str
    tasks: str

    @classmethod
    def build(cls, *, prefix: str, scope_id: int, user_id: int, hash_tags: bool = False) -> TaskKeys:
        """Check every segment and build the keys; raises `InvalidIdError` before any I/O."""
        user = user_prefix(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=hash_tags)
        return cls(user=user, tasks=f"{user}::a2a:tasks")

    def task(self, task_id: str) -> str:
        """The hash of task `task_id` (its session, agent, run and state), after checking the id."""
        return f"{self.user}::a2a:task:{check_id('task_id', task_id)}"


def conversation_key(user: str, session_id: str) -> str:
    """`<user prefix>:{session_id}:msgs`, after checking the id."""
    return f"{user}:{check_id('conversation_id', session_id)}:msgs"


def user_prefix(*, prefix: str, scope_id: int, user_id: int, hash_tags: bool = False) -> str:
    """`{prefix}:{scope_id}:{user_id}`, hash-tagged for Redis Cluster when asked."""
    base = f"{check_prefix(prefix)}:{check_int_id('scope_id', scope_id)}:{check_int_id('user_id', user_id)}"
    return f"{{{base}}}" if hash_tags else base


def active_key(*, prefix: str, scope_id: int, user_id: int, hash_tags: bool = False) -> str:
    """The sorted set of a user's sessions that hold (or held until they died) a live flag."""
    return f"{user_prefix(prefix=prefix, scope_id=scope_id, user_id=user_id, hash_tags=hash_tags)}{_ACTIVE_SUFFIX}"


def queue_key(prefix: str) -> str:
    """The stream of runs waiting for a worker (a consumer group's), hash-tagged: the run queue's keys
    share one slot of a Redis Cluster."""
    return f"{{{check_prefix(prefix)}::runs}}"


def queue_wake_key(prefix: str, worker: str) -> str:
    """A worker's own stream, read with the queue, written to wake its blocked claim when it stops."""
    return f"{queue_key(prefix)}:wake:{worker}"


def queued_key(prefix: str, scope_id: int) -> str:
    """The sorted set of a scope's runs accepted and not yet claimed by a worker (its queue's depth)."""
    return f"{queue_key(prefix)}:queued:{check_int_id('scope_id', scope_id)}"


def scope_jobs_key(prefix: str, scope_id: int) -> str:
    """The stream of a scope's jobs not yet given to a worker: they enter the queue one per turn of the scope."""
    return f"{queue_key(prefix)}:scope:{check_int_id('scope_id', scope_id)}"


def scopes_key(prefix: str) -> str:
    """The sorted set of the scopes with jobs waiting (their `scope_jobs_key`), scored by turn: next first."""
    return f"{queue_key(prefix)}:scopes"


def turn_key(prefix: str) -> str:
    """The counter that numbers the scopes' turns (a scope's next turn is after every other's)."""
    return f"{queue_key(prefix)}:turn"


def ready_key(prefix: str) -> str:
    """The stream that wakes a worker waiting for jobs: an entry per job added (read by one worker, unacked)."""
    return f"{queue_key(prefix)}:ready"


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueKeys:
    """The run queue's keys under a prefix, all in one slot of a Redis Cluster (see `queue_key`)."""

    prefix: str
    queue: str
    scopes: str
    turn: str
    ready: str

    @classmethod
    def build(cls, prefix: str) -> QueueKeys:
        """Check the prefix and build the keys; raises `InvalidIdError` before any I/O."""
        return cls(
            prefix=prefix,
            queue=queue_key(prefix),
            scopes=scopes_key(prefix),
            turn=turn_key(prefix),
            ready=ready_key(prefix),
        )

    def jobs(self, scope_id: int) -> str:
        """The scope's job stream (`scope_jobs_key`)."""
        return scope_jobs_key(self.prefix, scope_id)

    def queued(self, scope_id: int) -> str:
        """The scope's queued runs (`queued_key`)."""
        return queued_key(self.prefix, scope_id)


def cancel_channel(prefix: str) -> str:
    """The Pub/Sub channel on which cancels are announced to the processes running the runs."""
    return f"{check_prefix(prefix)}::cancel"


def workers_key(prefix: str) -> str:
    """The hash of the live workers: each one's name -> until when it lives and the agents it hosts."""
    return f"{check_prefix(prefix)}::workers"
