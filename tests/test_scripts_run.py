"""A run's scripts (`_store/scripts/*.lua`) called as Redis sees them: each pins its KEYS and ARGV positions
and drives every return code it has."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream._core.cursor import Cursor
from pydantic_ai_stream._core.keys import SessionKeys
from pydantic_ai_stream._read.notices import carried_entries
from pydantic_ai_stream._store.results import ActiveState, CancelState, LeaseState, OpenState
from pydantic_ai_stream._store.scripts import NOTICE_MAX_BYTES, session

NOW = int(time.time() * 1000)


def _keys(settings: Settings, session_id: str = "s1") -> SessionKeys:
    return SessionKeys.build(prefix=settings.redis_prefix, scope_id=1, user_id=1, session_id=session_id)


@pytest.fixture
def k(settings: Settings) -> SessionKeys:
    return _keys(settings)


def _open_keys(k: SessionKeys) -> list[str]:
    return [k.live, k.stream, k.active, k.durable, k.runs]


def _open_args(k: SessionKeys, run_id: str, nonce: str, *, queued: bool = False) -> list[str | int]:
    begin = json.dumps({"session_id": k.session_id, "run_id": run_id}, separators=(",", ":"))
    return [run_id, 60_000, k.session_id, NOW, 1000, 60_000, begin, begin[:-1], nonce, "1" if queued else "0"]


async def _types(redis: Redis, stream: str) -> list[tuple[str, dict[str, object]]]:
    return [(f[b"type"].decode(), json.loads(f[b"body"])) for _, f in await redis.xrange(stream)]


async def test_open_opens_once_and_answers_a_resend_an_existing_run_and_a_busy_session(
    redis: Redis, k: SessionKeys
) -> None:
    state, begin_id = await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1"))
    assert state == OpenState.OPENED
    [(entry_id, fields)] = await redis.xrange(k.stream)
    assert entry_id == begin_id
    assert (fields[b"type"], fields[b"nonce"]) == (b"begin", b"n1")
    assert json.loads(fields[b"body"]) == {"session_id": "s1", "run_id": "r1"}
    assert await redis.get(k.live) == b"r1"
    assert await redis.hget(k.runs, "r1") == begin_id
    assert await redis.zscore(k.active, "s1") == NOW
    assert await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1")) == [1, begin_id]
    assert await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n2")) == [2, begin_id]
    assert await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r2", "n3")) == [0, b""]
    assert (OpenState.EXISTS, OpenState.BUSY) == (2, 0)


async def test_open_queued_marks_the_flag_and_answers_queued(redis: Redis, k: SessionKeys) -> None:
    state, begin_id = await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "q1", "n1", queued=True))
    assert state == OpenState.OPENED
    assert (await redis.get(k.live), await redis.get(k.durable)) == (b"queued:q1", b"q1:1")
    reply = await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "q1", "n2"))
    assert reply == [OpenState.QUEUED, begin_id]


async def test_open_a_durable_run_between_workers_holds_the_session(redis: Redis, k: SessionKeys) -> None:
    await redis.set(k.durable, "r1:2")
    assert await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1")) == [OpenState.EXISTS, b""]
    assert await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r2", "n2")) == [OpenState.BUSY, b""]


async def test_open_with_its_job_queues_it_up_to_the_scopes_limit(
    redis: Redis, k: SessionKeys, settings: Settings
) -> None:
    jobs, queued, scopes, turn, ready = (f"{settings.redis_prefix}:{name}" for name in ("j", "q", "sc", "t", "r"))
    keys = [k.live, k.stream, k.active, k.durable, jobs, queued, scopes, turn, ready, k.runs]
    args = [*_open_args(k, "q1", "n1", queued=True), "m1", 0, "run_id", "q1"]
    assert await session._OPEN(redis, keys=keys, args=args) == [OpenState.FULL, b""]
    assert await redis.exists(k.live, k.stream) == 0, "nothing written"
    args[11] = 1  # ARGV[12], the scope's limit
    state, _ = await session._OPEN(redis, keys=keys, args=args)
    assert state == OpenState.OPENED
    [(_, job)] = await redis.xrange(jobs)
    assert job == {b"run_id": b"q1"}
    assert await redis.zscore(queued, "m1") == NOW + 60_000
    assert await redis.zscore(scopes, jobs) == 1
    assert await redis.xlen(ready) == 1


async def test_append_writes_under_the_lease_once_and_refuses_another_run(
    redis: Redis, settings: Settings, k: SessionKeys
) -> None:
    other = _keys(settings, "s2")
    _, begin_id = await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1"))
    args = [
        1000,
        60_000,
        "r1",
        begin_id,
        2,
        "event",
        "o",
        '{"i":1}',
        "info",
        "o",
        '{"i":2}',
        "rX",
        "",
        1,
        "event",
        "o",
        "{}",
    ]
    last, refused = await session._APPEND(redis, keys=[k.live, k.stream, other.live, other.stream], args=args)
    assert refused == b""
    assert await _types(redis, k.stream) == [("begin", {"session_id": "s1", "run_id": "r1"}), ("event", {"i": 1}),
                                             ("info", {"i": 2})]  # fmt: skip
    assert (await redis.xrevrange(k.stream, count=1))[0][0] == last
    assert await session._APPEND(redis, keys=[k.live, k.stream], args=args[:11]) == [last], "a re-sent batch"
    assert await redis.xlen(k.stream) == 3


async def test_append_reads_every_fence_and_stream_end_once_for_all_its_sessions(
    redis: Redis, settings: Settings
) -> None:
    ks = [_keys(settings, f"s{i}") for i in range(3)]
    begins = [
        (await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, f"r{i}", "n")))[1] for i, k in enumerate(ks)
    ]
    keys = [key for k in ks for key in (k.live, k.stream)]
    args: list[str | int] = [1000, 60_000]
    for i, begin in enumerate(begins):
        args += [f"r{i}", begin, 2, "event", "o", f'{{"i":{i}}}', "event", "o", "{}"]
    await redis.script_load(session._APPEND.source)
    await redis.config_resetstat()
    first = await session._APPEND(redis, keys=keys, args=args)
    stats = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if "config" not in name}
    expected = {"evalsha": 1, "mget": 1, "xread": 1, "xadd": 6, "publish": 3}  # a notice per stream written
    assert calls == expected, "one fence read and one end read for all"
    # Re-sent by a retrying client (its reply lost), the batch writes nothing twice.
    assert await session._APPEND(redis, keys=keys, args=args) == first
    assert [await redis.xlen(k.stream) for k in ks] == [3, 3, 3]


async def _notice_of(redis: Redis, k: SessionKeys, args: list[str | int]) -> bytes:
    """What `append` with `args` (one session: `k`'s) tells the stream's subscribers."""
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(k.stream)
        await session._APPEND(redis, keys=[k.live, k.stream], args=args)
        async with asyncio.timeout(10):
            while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)) is None:
                pass
    data: bytes = message["data"]
    return data


async def test_appends_notice_carries_its_entries_after_the_id_they_follow_on_from(
    redis: Redis, k: SessionKeys
) -> None:
    _, begin_id = await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1"))
    notice = await _notice_of(redis, k, [1000, 60_000, "r1", begin_id, 2, "event", "o", '{"i":1}', "info", "p", "{}"])
    (first, _), (second, _) = (await redis.xrange(k.stream))[1:]
    assert notice.split(b"\0") == [begin_id, first, b"event", b"o", b'{"i":1}', second, b"info", b"p", b"{}"]
    entries = carried_entries(notice.decode(), Cursor(begin_id.decode()).key)
    assert entries is not None
    assert [(e.id, e.type, e.origin, e.body) for e in entries] == [
        (first.decode(), "event", "o", {"i": 1}),
        (second.decode(), "info", "p", {}),
    ]


@pytest.mark.parametrize(
    "entries",
    [
        [("event", "o", "{}"), ("event", "o", "x" * (NOTICE_MAX_BYTES - 1))],
        [("event", "o", '{"a":"\0"}')],
        [("event", "o", "{}"), ("custom\0type", "o", "{}")],
    ],
    ids=["larger than a notice carries", "a NUL in a body", "a NUL in a type"],
)
async def test_appends_notice_carries_nothing_past_its_bound_or_with_a_nul(
    entries: list[tuple[str, str, str]], redis: Redis, k: SessionKeys
) -> None:
    _, begin_id = await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1"))
    args: list[str | int] = [1000, 60_000, "r1", begin_id, len(entries)]
    for entry in entries:
        args += entry
    assert await _notice_of(redis, k, args) == b"", "the stream is read instead"
    written = [
        (f[b"type"].decode(), f[b"origin"].decode(), f[b"body"].decode()) for _, f in await redis.xrange(k.stream)
    ]
    assert written[1:] == entries, "written all the same"


def test_a_notice_gives_only_entries_that_follow_on_from_the_cursor() -> None:
    notice = "\0".join(["5-0", "6-0", "event", "o", '{"i":6}', "7-0", "event", "o", '{"i":7}'])
    assert [e.id for e in carried_entries(notice, (5, 0)) or []] == ["6-0", "7-0"]
    assert [e.id for e in carried_entries(notice, (6, 0)) or []] == ["7-0"], "one of them read already"
    assert carried_entries(notice, (7, 0)) == [], "all of them read already"
    assert carried_entries(notice, (4, 9)) is None, "an entry between the cursor and them: read the stream"
    for malformed in ("5-0\0" + "6-0\0event\0o", "5-0\06-0\0event\0o\0{not json", "x\06-0\0e\0o\0{}", "?"):
        assert carried_entries(malformed, (5, 0)) is None, malformed


async def test_close_writes_end_once_and_refuses_a_lost_lease(redis: Redis, k: SessionKeys) -> None:
    await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1"))
    keys = [k.live, k.stream, k.active, k.durable, k.checkpoint, k.checkpoint_msgs]
    end_id = await session._CLOSE(redis, keys=keys, args=["r1", 1000, 5000, "s1", '{"run_id":"r1"}'])
    assert (await _types(redis, k.stream))[-1] == ("end", {"run_id": "r1"})
    assert (await redis.exists(k.live), await redis.zscore(k.active, "s1")) == (0, None)
    assert 0 < await redis.pttl(k.stream) <= 5000
    assert await session._CLOSE(redis, keys=keys, args=["r1", 1000, 5000, "s1", '{"run_id":"r1"}']) == end_id
    assert await session._CLOSE(redis, keys=keys, args=["r2", 1000, 5000, "s1", '{"run_id":"r2"}']) is None


def _cancel_keys(k: SessionKeys) -> list[str]:
    return [k.live, k.stream, k.active, k.rollback, k.durable, k.checkpoint, k.input]


def _cancel_args(named: str = "", rollback: str = "0") -> list[str | int]:
    return ["channel", 1000, 60_000, "s1", '{"msg":"canceled"}', rollback, named]


async def test_cancel_signals_a_running_run_and_answers_none_or_already_after(redis: Redis, k: SessionKeys) -> None:
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args()) == [CancelState.NONE, b""]
    await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1"))
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args("r2")) == [CancelState.NONE, b""]
    reply = await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args(rollback="1"))
    assert reply == [CancelState.SIGNALLED, b"r1"]
    assert (await redis.get(k.live), await redis.get(k.rollback)) == (b"cancel:r1", b"r1")
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args("r1")) == [CancelState.ALREADY, b"r1"]
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args()) == [CancelState.NONE, b""]


async def test_cancel_ends_a_queued_run_and_knows_it_after(redis: Redis, k: SessionKeys) -> None:
    await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "q1", "n1", queued=True))
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args()) == [CancelState.ENDED, b"q1"]
    assert (await _types(redis, k.stream))[-2:] == [("error", {"msg": "canceled"}), ("end", {"run_id": "q1"})]
    assert (await redis.exists(k.live, k.durable), await redis.zscore(k.active, "s1")) == (0, None)
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args("q1")) == [CancelState.ALREADY, b"q1"]


async def test_cancel_marks_a_durable_run_between_workers(redis: Redis, k: SessionKeys) -> None:
    await session._OPEN(redis, keys=_open_keys(k), args=_open_args(k, "r1", "n1", queued=True))
    await redis.delete(k.live)  # its worker died
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args()) == [CancelState.SIGNALLED, b"r1"]
    assert await redis.hget(k.checkpoint, "cancel:r1") == b"keep"
    assert await session._CANCEL(redis, keys=_cancel_keys(k), args=_cancel_args("r1")) == [CancelState.ALREADY, b"r1"]


async def test_reap_ends_only_a_dead_runs_stream(redis: Redis, settings: Settings, k: SessionKeys) -> None:
    alive = _keys(settings, "s2")
    for keys in (k, alive):
        await session._OPEN(redis, keys=_open_keys(keys), args=_open_args(keys, "r1", "n1"))
    await redis.delete(k.live)  # its process died
    keys = [k.live, k.stream, k.active, k.durable, k.input, alive.live, alive.stream, alive.active, alive.durable,
            alive.input]  # fmt: skip
    args = [1000, 5000, '{"msg":"run lost"}', '{"msg":"input expired"}', "s1", "s2"]
    ended, lives_ms = await session._REAP(redis, keys=keys, args=args)
    assert ended == -1
    assert lives_ms >= await redis.pttl(alive.live) > 0, "the live run: its lease's time to live"
    assert (await _types(redis, k.stream))[-2:] == [("error", {"msg": "run lost"}), ("end", {})]
    assert await redis.zrange(k.active, 0, -1) == [b"s2"]
    ended, _ = await session._REAP(redis, keys=keys, args=args)
    assert ended == 0, "already ended"


async def test_renew_answers_each_lease_and_the_runs_waiting_behind(
    redis: Redis, settings: Settings, k: SessionKeys
) -> None:
    cancelled, lost = _keys(settings, "s2"), _keys(settings, "s3")
    await redis.set(k.live, "r1")
    await redis.set(cancelled.live, "cancel:r2")
    await redis.rpush(k.waiting, '{"run_id":"w1"}')
    keys = [key for s in (k, cancelled, lost) for key in
            (s.live, s.stream, s.waiting, s.durable, s.checkpoint, s.checkpoint_msgs)]  # fmt: skip
    reply = await session._RENEW(redis, keys=keys, args=[5000, 60_000, 7000, "r1", "0", "r2", "0", "r3", "0"])
    assert reply == [[LeaseState.HELD, LeaseState.CANCEL_REQUESTED, LeaseState.LOST], [[b"w1"], [], []]]
    assert 0 < await redis.pttl(k.live) <= 5000
    assert 5000 < await redis.pttl(k.waiting) <= 7000


async def test_prune_answers_each_sessions_state_and_drops_the_gone(redis: Redis, settings: Settings) -> None:
    sessions = [_keys(settings, f"s{i}") for i in range(6)]
    live, cancelling, queued, resuming, cancelled_between, gone = sessions
    await redis.set(live.live, "r0")
    await redis.set(cancelling.live, "cancel:r1")
    await redis.set(queued.live, "queued:r2")
    await redis.set(resuming.durable, "r3:2")
    await redis.set(cancelled_between.durable, "r4:1")
    await redis.hset(cancelled_between.checkpoint, "cancel:r4", "keep")
    await redis.zadd(live.active, {s.session_id: 1 for s in sessions})
    keys = [live.active, *(key for s in sessions for key in (s.live, s.durable, s.checkpoint))]
    reply = await session._PRUNE(redis, keys=keys, args=[s.session_id for s in sessions])
    assert reply == [ActiveState.LIVE, ActiveState.CANCELLING, ActiveState.QUEUED, ActiveState.RESUMING,
                     ActiveState.CANCELLING, ActiveState.GONE, b"r0", b"r1", b"r2", b"r3:2", b"r4:1", b""]  # fmt: skip
    assert gone.session_id.encode() not in await redis.zrange(live.active, 0, -1)
    assert await redis.zcard(live.active) == 5
