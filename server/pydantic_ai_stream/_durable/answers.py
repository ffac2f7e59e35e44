"""Answers to a waiting run's deferred tool calls (`respond`): checked, held until every call has one, then the
run queued to go on (see docs/waiting-runs.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .._core.deferred import Responded, ToolAnswer
from .._core.errors import InvalidRequestError, NotWaitingError, RunNotFoundError
from .._core.keys import check_id, excerpt
from .._store.redis import is_cluster
from .._store.results import Enqueue, RespondState
from .._store.stream import SessionStream
from .queue import RunQueue
from .scripts import add_job

__all__ = ["MAX_ANSWER_BYTES", "respond"]

MAX_ANSWER_BYTES = 1 << 20
"""Largest answer to one deferred tool call, in bytes as stored (JSON): it is kept in Redis while the run waits."""


async def respond(queue: RunQueue, stream: SessionStream, run_id: str, answers: Sequence[ToolAnswer]) -> Responded:
    """Answer calls the run `run_id` of the session of `stream` waits on; once every call has an answer the run
    is queued to go on, its job added again (in the same script, or after it on a Redis Cluster: a retry
    adds it again and the worker that claims a second job finds the run taken).

    Raises `InvalidRequestError` (no answers, an id twice, an unknown call, an answer of the wrong kind),
    `RunNotFoundError`, `NotWaitingError` (not waiting, or a call answered otherwise), writing nothing.
    """
    check_id("run_id", run_id)
    if not answers:
        raise InvalidRequestError("give at least one answer")
    ids = [answer.tool_call_id for answer in answers]
    if len(set(ids)) < len(ids):
        raise InvalidRequestError("a tool call id is answered twice")
    for answer in answers:
        if (size := len(answer.stored().encode())) > MAX_ANSWER_BYTES:
            raise InvalidRequestError(
                f"the answer to tool call {excerpt(answer.tool_call_id)} is {size} bytes as stored (JSON); "
                f"the limit is {MAX_ANSWER_BYTES}"
            )
    cluster = is_cluster(queue.redis)
    queue_keys = queue.keys
    enqueue = None
    if not cluster:
        scope_id = stream.keys.scope_id
        enqueue = Enqueue(
            queue=queue_keys.jobs(scope_id), queued=queue_keys.queued(scope_id), member="", limit=0, fields={},
            scopes=queue_keys.scopes, turn=queue_keys.turn, ready=queue_keys.ready,
        )  # fmt: skip
    state, values = await stream.respond(run_id=run_id, answers=answers, wait_ms=queue.wait_ms, enqueue=enqueue)
    if state is RespondState.HELD:
        return Responded(continued=False, pending=values)
    if state is RespondState.CONTINUED:
        if cluster:
            fields = {**json.loads(values[0]), "continues": "1"}
            await add_job(queue.redis, queue_keys, scope_id=stream.keys.scope_id, fields=fields)
        return Responded(continued=True)
    if state is RespondState.NOT_FOUND:
        raise RunNotFoundError(f"session {stream.keys.session_id!r} has no run {excerpt(run_id)}")
    if state is RespondState.UNKNOWN_CALL:
        raise InvalidRequestError(f"run {run_id!r} does not wait on a tool call {excerpt(values[0])}")
    if state is RespondState.WRONG_KIND:
        raise InvalidRequestError(f"tool call {values[0]!r} waits for the other kind of answer")
    if state is RespondState.CONFLICT:
        raise NotWaitingError(f"tool call {values[0]!r} already has another answer")
    raise NotWaitingError(f"run {run_id!r} does not wait for input")
