"""The scripts of runs that wait for input (`await_input.lua`, `respond.lua`), each behind a call with named
arguments (see docs/waiting-runs.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..._core.entry import decode
from ..._core.keys import SessionKeys
from ..redis import AsyncRedis
from ..results import Enqueue, LeaseState, RespondState
from . import LuaScript

__all__ = ["await_input", "load_input", "respond"]

_AWAIT_INPUT = LuaScript.load(__package__, "await_input", codes=[LeaseState])
_RESPOND = LuaScript.load(__package__, "respond", codes=[RespondState])


async def await_input(
    redis: AsyncRedis,
    keys: SessionKeys,
    *,
    token: str,
    run_id: str,
    wait_ms: int,
    keep_ms: int,
    idx: int,
    deadline_ms: int,
    waited: int,
    job: Mapping[str, str],
    maxlen: int,
    body: str,
    calls: Sequence[tuple[str, str, str]],
) -> LeaseState:
    """`await_input.lua`: `body` is the `input_required` event's (JSON), `calls` holds `(call id, tool name, kind)`."""
    args: list[str | int] = [token, run_id, wait_ms, keep_ms, idx, deadline_ms, waited, json.dumps(dict(job))]
    args += [maxlen, body]
    for call_id, tool_name, kind in calls:
        args += [call_id, json.dumps({"tool_name": tool_name, "kind": kind})]
    state = await _AWAIT_INPUT(
        redis,
        keys=[keys.live, keys.stream, keys.input, keys.durable, keys.checkpoint, keys.checkpoint_msgs, keys.runs],
        args=args,
    )
    return LeaseState(int(state))


async def respond(
    redis: AsyncRedis,
    keys: SessionKeys,
    *,
    run_id: str,
    wait_ms: int,
    keep_ms: int,
    maxlen: int,
    retention_ms: int,
    expired: str,
    answers: Sequence[tuple[str, bool, str]],
    enqueue: Enqueue | None,
) -> tuple[RespondState, list[str]]:
    """`respond.lua`: `answers` holds `(call id, is an approval, stored answer)`; `enqueue` names the queue's
    keys (its `fields`, `queued`, `member` and `limit` unused: the job is the one the wait kept). Returns the
    state and its values (pending call ids, the call id at fault, or the job's JSON)."""
    script_keys = [keys.live, keys.stream, keys.input, keys.durable, keys.runs, keys.active]
    if enqueue is not None:
        script_keys += [enqueue.queue, enqueue.scopes, enqueue.turn, enqueue.ready]
    args: list[str | int] = [run_id, wait_ms, keep_ms, maxlen, keys.session_id, retention_ms, expired]
    for call_id, approval, stored in answers:
        args += [call_id, "approval" if approval else "result", stored]
    reply = await _RESPOND(redis, keys=script_keys, args=args)
    return RespondState(int(reply[0])), [decode(value) for value in reply[1:]]


async def load_input(redis: AsyncRedis, keys: SessionKeys) -> dict[str, str]:
    """The session's `input` hash, as strings."""
    return {decode(k): decode(v) for k, v in (await redis.hgetall(keys.input)).items()}
