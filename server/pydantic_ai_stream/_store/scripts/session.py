"""The session's scripts (`*.lua` beside this module), each behind a call with named arguments.

Each call builds its script's KEYS and ARGV in the order the script's header states, and turns its reply
into the codes and tuples of `_store.results`.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import NoScriptError

from ..._core.entry import Entry, decode
from ..._core.keys import SessionKeys
from ..._core.names import BEGIN, ORIGIN_STREAM
from ..redis import AsyncRedis, is_cluster
from ..results import (
    ActiveState,
    CancelState,
    Enqueue,
    Held,
    LeaseState,
    OpenState,
    Recovered,
    Recovery,
    Renewal,
    WaitState,
)
from . import LuaScript

__all__ = [
    "adopt",
    "append",
    "cancel",
    "checkpoint",
    "close",
    "hand_back",
    "load_checkpoint",
    "open_run",
    "prune",
    "reap",
    "recover",
    "renew",
    "wait_behind",
]

_OPEN = LuaScript.load(__package__, "open", codes=[OpenState])
_APPEND = LuaScript.load(__package__, "append")
_CLOSE = LuaScript.load(__package__, "close")
_HAND_BACK = LuaScript.load(__package__, "hand_back", codes=[LeaseState])
_CHECKPOINT = LuaScript.load(__package__, "checkpoint", codes=[LeaseState])
_LOAD_CHECKPOINT = LuaScript.load(__package__, "load_checkpoint")
_WAIT = LuaScript.load(__package__, "wait", codes=[WaitState])
_RENEW = LuaScript.load(__package__, "renew", codes=[LeaseState])
_CANCEL = LuaScript.load(__package__, "cancel", codes=[CancelState])
_ADOPT = LuaScript.load(__package__, "adopt")
_RECOVER = LuaScript.load(__package__, "recover", codes=[Recovery])
_REAP = LuaScript.load(__package__, "reap")
_PRUNE = LuaScript.load(__package__, "prune", codes=[ActiveState])


def _run_keys(keys: SessionKeys) -> list[str]:
    """The keys a run's start and end touch: live flag, stream, active set, durable key."""
    return [keys.live, keys.stream, keys.active, keys.durable]


def _begin(entry_id: bytes | str, body: bytes | str) -> Entry:
    return Entry.from_redis(entry_id, {"type": BEGIN, "origin": ORIGIN_STREAM, "body": body})


def _flag(value: bool) -> str:
    return "1" if value else "0"


async def open_run(
    redis: AsyncRedis,
    keys: SessionKeys,
    *,
    run_id: str,
    lease_ms: int,
    now_ms: int,
    maxlen: int,
    retention_ms: int,
    begin: str,
    own: str,
    nonce: str,
    queued: bool,
    enqueue: Enqueue | None,
) -> tuple[OpenState, str]:
    """`open.lua`: `begin` (JSON) starts with `own`, the part naming this session and run."""
    script_keys = _run_keys(keys)
    args: list[str | int] = [run_id, lease_ms, keys.session_id, now_ms, maxlen, retention_ms, begin, own, nonce,
                             _flag(queued)]  # fmt: skip
    if enqueue is not None:
        script_keys += [enqueue.queue, enqueue.queued, enqueue.scopes, enqueue.turn, enqueue.ready]
        args += [enqueue.member, enqueue.limit, *(item for pair in enqueue.fields.items() for item in pair)]
    script_keys.append(keys.runs)
    state, entry_id = await _OPEN(redis, keys=script_keys, args=args)
    return OpenState(int(state)), decode(entry_id)


async def append(
    redis: AsyncRedis,
    writes: Sequence[tuple[SessionKeys, str, str, Sequence[tuple[str, str, str]]]],
    *,
    maxlen: int,
    retention_ms: int,
) -> list[str | None]:
    """`append.lua`: `writes` holds `(keys, run_id, after, entries)`, each entry `(type, origin, body JSON)`."""
    script_keys: list[str] = []
    args: list[str | int] = [maxlen, retention_ms]
    for keys, run_id, after, entries in writes:
        script_keys += [keys.live, keys.stream]
        args += [run_id, after, len(entries)]
        for entry in entries:
            args += entry
    ids = await _APPEND(redis, keys=script_keys, args=args)
    return [decode(entry_id) or None for entry_id in ids]


async def close(redis: AsyncRedis, keys: SessionKeys, *, token: str, maxlen: int, grace_ms: int, end: str) -> bool:
    """`close.lua`: `False` if the lease `token` was lost."""
    entry_id = await _CLOSE(
        redis,
        keys=[*_run_keys(keys), keys.checkpoint, keys.checkpoint_msgs],
        args=[token, maxlen, grace_ms, keys.session_id, end],
    )
    return entry_id is not None


async def close_and_peek(
    redis: AsyncRedis, keys: SessionKeys, *, token: str, maxlen: int, grace_ms: int, end: str
) -> tuple[bool, bool]:
    """`close`, and whether a run waits behind the session's (its waiting list, read right after): one round
    trip where Redis knows the script (else `close`, and a run is taken to wait; so on a Redis Cluster)."""
    script_keys = [*_run_keys(keys), keys.checkpoint, keys.checkpoint_msgs]
    args: list[str | int] = [token, maxlen, grace_ms, keys.session_id, end]
    if not is_cluster(redis):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(_CLOSE.sha, len(script_keys), *script_keys, *args)
            pipe.llen(keys.waiting)
            entry_id, waiting = await pipe.execute(raise_on_error=False)
        if not isinstance(entry_id, NoScriptError):  # else nothing ran: `close` loads the script and runs it
            for reply in (entry_id, waiting):
                if isinstance(reply, Exception):
                    raise reply
            return entry_id is not None, bool(waiting)
    return await close(redis, keys, token=token, maxlen=maxlen, grace_ms=grace_ms, end=end), True


async def hand_back(redis: AsyncRedis, keys: SessionKeys, *, token: str, run_id: str, wait_ms: int) -> LeaseState:
    """`hand_back.lua`: `HELD` if the lease `token` was held (and is let go), else `LOST`."""
    state = await _HAND_BACK(
        redis, keys=[keys.live, keys.checkpoint, keys.durable, keys.checkpoint_msgs], args=[token, run_id, wait_ms]
    )
    return LeaseState(int(state))


async def checkpoint(
    redis: AsyncRedis,
    keys: SessionKeys,
    *,
    token: str,
    run_id: str,
    idx: int,
    ttl_ms: int,
    kept: int,
    messages: Sequence[bytes],
) -> LeaseState:
    """`checkpoint.lua`: `HELD` if kept, `LOST` if the lease `token` is not held."""
    state = await _CHECKPOINT(
        redis,
        keys=[keys.live, keys.checkpoint, keys.checkpoint_msgs, keys.durable],
        args=[token, run_id, idx, ttl_ms, kept, *messages],
    )
    return LeaseState(int(state))


async def load_checkpoint(redis: AsyncRedis, keys: SessionKeys, *, run_id: str) -> tuple[int, list[bytes]] | None:
    """`load_checkpoint.lua`: the node and the messages (each one's JSON), or `None` without a checkpoint."""
    reply = await _LOAD_CHECKPOINT(redis, keys=[keys.checkpoint, keys.checkpoint_msgs], args=[run_id])
    if not reply:
        return None
    return int(reply[0]), [m if isinstance(m, bytes) else str(m).encode() for m in reply[1:]]


async def wait_behind(
    redis: AsyncRedis, keys: SessionKeys, *, run_id: str, run: str, ttl_ms: int, first: bool
) -> WaitState:
    """`wait.lua`: `run` is the waiting run's JSON (with its `run_id`)."""
    state = await _WAIT(redis, keys=[keys.live, keys.waiting, keys.durable], args=[run_id, run, ttl_ms, _flag(first)])
    return WaitState(int(state))


async def renew(
    redis: AsyncRedis,
    leases: Sequence[tuple[SessionKeys, str, bool]],
    *,
    lease_ms: int,
    retention_ms: int,
    wait_ms: int,
) -> list[Renewal]:
    """`renew.lua`: `leases` holds `(keys, run_id, durable)`; per lease its state and the runs waiting behind."""
    script_keys = [
        key
        for keys, _, _ in leases
        for key in (keys.live, keys.stream, keys.waiting, keys.durable, keys.checkpoint, keys.checkpoint_msgs)
    ]
    args: list[str | int] = [lease_ms, retention_ms, wait_ms]
    for _, run_id, durable in leases:
        args += [run_id, _flag(durable)]
    states, waiting = await _RENEW(redis, keys=script_keys, args=args)
    return [
        Renewal(LeaseState(int(state)), [decode(run_id) for run_id in behind])
        for state, behind in zip(states, waiting, strict=True)
    ]


async def cancel(
    redis: AsyncRedis,
    keys: SessionKeys,
    *,
    channel: str,
    maxlen: int,
    retention_ms: int,
    error: str,
    rollback: bool,
    run_id: str,
) -> tuple[CancelState, str]:
    """`cancel.lua`: `error` is the `canceled` error's body; `run_id` `""` cancels whichever run."""
    state, found = await _CANCEL(
        redis,
        keys=[keys.live, keys.stream, keys.active, keys.rollback, keys.durable, keys.checkpoint, keys.input],
        args=[channel, maxlen, retention_ms, keys.session_id, error, _flag(rollback), run_id],
    )
    return CancelState(int(state)), decode(found)


async def adopt(
    redis: AsyncRedis, keys: SessionKeys, *, run_id: str, lease_ms: int, wait_ms: int, adopter: str
) -> tuple[Entry, str, bool] | None:
    """`adopt.lua`: the run's `begin`, the stream's last id and whether the run goes on after its answered wait
    for input; `None` if it is no longer queued."""
    reply = await _ADOPT(
        redis,
        keys=[
            keys.live, keys.stream, keys.durable, keys.checkpoint, keys.active, keys.attachments(run_id), keys.input
        ],
        args=[run_id, lease_ms, wait_ms, adopter, keys.session_id],
    )  # fmt: skip
    return (_begin(reply[0], reply[1]), decode(reply[2]), decode(reply[3]) == "1") if reply else None


async def recover(
    redis: AsyncRedis,
    keys: SessionKeys,
    *,
    run_id: str,
    lease_ms: int,
    max_attempts: int,
    maxlen: int,
    retention_ms: int,
    wait_ms: int,
    error: str,
) -> Recovered | Held | None:
    """`recover.lua`: `error` is the body of the error that ends a run out of attempts."""
    reply = await _RECOVER(
        redis,
        keys=[*_run_keys(keys), keys.checkpoint, keys.checkpoint_msgs, keys.rollback],
        args=[run_id, lease_ms, max_attempts, maxlen, retention_ms, keys.session_id, wait_ms, error],
    )
    if int(reply[0]) == Recovery.NOTHING:
        return None
    if int(reply[0]) == Recovery.HELD:
        return Held(left_ms=int(reply[1]))
    attempt, begin_id, body, marker_id, cancelled = reply
    return Recovered(
        attempt=int(attempt),
        token=f"{run_id}:{int(attempt)}",
        begin=_begin(begin_id, body),
        marker_id=decode(marker_id),
        cancelled=bool(int(cancelled)),
    )


async def reap(
    redis: AsyncRedis, keys: Sequence[SessionKeys], *, maxlen: int, grace_ms: int, error: str, expired: str
) -> list[int | None]:
    """`reap.lua`: per session `None` if it ended its stream, else the ms its run lives on at least (0: not
    known); `error` is the lost run's error body, `expired` that of a run whose wait for input expired."""
    script_keys = [key for k in keys for key in (*_run_keys(k), k.input)]
    args: list[str | int] = [maxlen, grace_ms, error, expired, *(k.session_id for k in keys)]
    done = await _REAP(redis, keys=script_keys, args=args)
    return [None if int(ms) < 0 else int(ms) for ms in done]


async def prune(redis: AsyncRedis, keys: Sequence[SessionKeys]) -> list[tuple[ActiveState, str]]:
    """`prune.lua`: of sessions of one active set, each one's state and its flag's run id."""
    flags = [key for k in keys for key in (k.live, k.durable, k.checkpoint)]
    reply = await _PRUNE(redis, keys=[keys[0].active, *flags], args=[k.session_id for k in keys])
    states, runs = reply[: len(keys)], reply[len(keys) :]
    return [(ActiveState(int(state)), decode(run)) for state, run in zip(states, runs, strict=True)]
