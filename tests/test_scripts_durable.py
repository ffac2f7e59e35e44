"""A durable run's scripts (`_store/scripts/*.lua`: hand-back, checkpoints, waiting, adopt, recover) called as
Redis sees them: each pins its KEYS and ARGV positions and drives every return code it has."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream._core.keys import SessionKeys
from pydantic_ai_stream._store.results import LeaseState, Recovery, WaitState
from pydantic_ai_stream._store.scripts import session

BEGIN = '{"session_id":"s1","run_id":"r1"}'


@pytest.fixture
def k(settings: Settings) -> SessionKeys:
    return SessionKeys.build(prefix=settings.redis_prefix, scope_id=1, user_id=1, session_id="s1")


async def _queued(redis: Redis, k: SessionKeys) -> bytes:
    """The run `r1` queued in session `s1` (its `begin` written, its flag `queued:r1`): its `begin` id."""
    await redis.set(k.live, "queued:r1")
    await redis.set(k.durable, "r1:1")
    begin_id: bytes = await redis.xadd(k.stream, {"type": "begin", "origin": "pydantic-ai-stream", "body": BEGIN})
    return begin_id


async def test_hand_back_lets_go_of_a_held_lease_only(redis: Redis, k: SessionKeys) -> None:
    await redis.set(k.live, "r1:2")
    keys = [k.live, k.checkpoint, k.durable, k.checkpoint_msgs]
    assert await session._HAND_BACK(redis, keys=keys, args=["r1:3", "r1", 5000]) == LeaseState.LOST
    await redis.set(k.durable, "r1:2")
    assert await session._HAND_BACK(redis, keys=keys, args=["r1:2", "r1", 5000]) == LeaseState.HELD
    assert await redis.exists(k.live) == 0
    assert await redis.hget(k.checkpoint, "handed:r1") == b"1"
    assert 0 < await redis.pttl(k.durable) <= 5000


async def test_checkpoint_keeps_progress_under_the_lease_and_load_reads_it(redis: Redis, k: SessionKeys) -> None:
    keys = [k.live, k.checkpoint, k.checkpoint_msgs, k.durable]
    load = [k.checkpoint, k.checkpoint_msgs]
    assert await session._LOAD_CHECKPOINT(redis, keys=load, args=["r1"]) == []
    await redis.set(k.live, "cancel:r1")  # asked to stop, still its lease
    assert await session._CHECKPOINT(redis, keys=keys, args=["r1", "r1", 3, 5000, 0, '"a"', '"b"']) == LeaseState.HELD
    assert await session._CHECKPOINT(redis, keys=keys, args=["r1", "r1", 4, 5000, 1, '"c"']) == LeaseState.HELD
    assert await session._LOAD_CHECKPOINT(redis, keys=load, args=["r1"]) == [b"4", b'"a"', b'"c"']
    assert await session._LOAD_CHECKPOINT(redis, keys=load, args=["r0"]) == [], "another run's"
    assert await session._CHECKPOINT(redis, keys=keys, args=["r2", "r1", 5, 5000, 2]) == LeaseState.LOST
    assert await redis.hget(k.checkpoint, "idx") == b"4"


async def test_wait_puts_a_run_behind_the_sessions_run_once(redis: Redis, k: SessionKeys) -> None:
    keys = [k.live, k.waiting, k.durable]
    w1, w2 = '{"run_id":"w1"}', '{"run_id":"w2"}'
    assert await session._WAIT(redis, keys=keys, args=["w1", w1, 5000, "0"]) == WaitState.NO_RUN
    await redis.set(k.durable, "r1:1")  # a durable run between two workers holds the session too
    assert await session._WAIT(redis, keys=keys, args=["w1", w1, 5000, "0"]) == WaitState.WAITING
    assert await session._WAIT(redis, keys=keys, args=["w1", w1, 5000, "0"]) == WaitState.ALREADY
    assert await session._WAIT(redis, keys=keys, args=["w2", w2, 5000, "1"]) == WaitState.WAITING
    assert await redis.lrange(k.waiting, 0, -1) == [w2.encode(), w1.encode()]
    assert 0 < await redis.pttl(k.waiting) <= 5000


async def test_adopt_takes_a_queued_run_and_answers_its_adopters_resend(redis: Redis, k: SessionKeys) -> None:
    keys = [k.live, k.stream, k.durable, k.checkpoint, k.active, k.attachments("r1"), k.input]
    assert await session._ADOPT(redis, keys=keys, args=["r1", 5000, 9000, "w1", "s1"]) == [], "no stream"
    begin_id = await _queued(redis, k)
    await redis.set(k.attachments("r1"), b"[]\n\x00\xff", px=60_000)
    adopted = [begin_id, BEGIN.encode(), begin_id, b"0"]  # the stream's last id: the writer goes on after it
    assert await session._ADOPT(redis, keys=keys, args=["r1", 5000, 9000, "w1", "s1"]) == adopted
    assert await redis.get(k.live) == b"r1"
    assert await redis.hget(k.checkpoint, "adopted:r1") == b"w1"
    assert await redis.hget(k.checkpoint, "attachments:r1") == b"[]\n\x00\xff", "moved, bytes as they were"
    assert not await redis.exists(k.attachments("r1"))
    assert 0 < await redis.pttl(k.checkpoint) <= 9000, "the checkpoint lives as long as the run's record"
    assert await redis.zrange(k.active, 0, -1) == [b"s1"]
    assert await session._ADOPT(redis, keys=keys, args=["r1", 5000, 9000, "w1", "s1"]) == adopted
    assert await redis.hget(k.checkpoint, "attachments:r1") == b"[]\n\x00\xff", "a resend keeps them"
    assert await session._ADOPT(redis, keys=keys, args=["r1", 5000, 9000, "w2", "s1"]) == [], "another's"


def _recover_keys(k: SessionKeys) -> list[str]:
    return [k.live, k.stream, k.active, k.durable, k.checkpoint, k.checkpoint_msgs, k.rollback]


def _recover_args(max_attempts: int = 5) -> list[str | int]:
    return ["r1", 5000, max_attempts, 1000, 60_000, "s1", 9000, '{"msg":"run lost"}']


async def test_recover_answers_nothing_or_held_then_takes_the_run_over(redis: Redis, k: SessionKeys) -> None:
    assert await session._RECOVER(redis, keys=_recover_keys(k), args=_recover_args()) == [Recovery.NOTHING]
    begin_id = await _queued(redis, k)
    await redis.set(k.live, "r1", px=4000)
    code, left_ms = await session._RECOVER(redis, keys=_recover_keys(k), args=_recover_args())
    assert code == Recovery.HELD
    assert 0 < left_ms <= 4000
    await redis.hset(k.checkpoint, mapping={"run": "r1", "idx": 3})
    await redis.delete(k.live)  # its worker died
    attempt, first, body, marker, cancelled = await session._RECOVER(redis, keys=_recover_keys(k), args=_recover_args())
    assert (attempt, first, body, cancelled) == (2, begin_id, BEGIN.encode(), 0)
    assert (await redis.get(k.live), await redis.get(k.durable)) == (b"r1:2", b"r1:2")
    [(marker_id, fields)] = await redis.xrevrange(k.stream, count=1)
    assert marker_id == marker
    assert json.loads(fields[b"body"]) == {"idx": 3, "event": "resumed", "attempt": 2}


async def test_recover_hands_a_cancelled_run_to_its_next_attempt_to_end(redis: Redis, k: SessionKeys) -> None:
    begin_id = await _queued(redis, k)
    await redis.delete(k.live)
    await redis.hset(k.checkpoint, "cancel:r1", "rollback")
    reply = await session._RECOVER(redis, keys=_recover_keys(k), args=_recover_args())
    assert reply == [2, begin_id, BEGIN.encode(), begin_id, 1]
    assert (await redis.get(k.live), await redis.get(k.rollback)) == (b"cancel:r1:2", b"r1:2")


async def test_recover_ends_a_run_out_of_attempts_or_forgets_an_ended_one(redis: Redis, k: SessionKeys) -> None:
    await _queued(redis, k)
    await redis.delete(k.live)
    assert await session._RECOVER(redis, keys=_recover_keys(k), args=_recover_args(1)) == [Recovery.NOTHING]
    types = [(f[b"type"], json.loads(f[b"body"])) for _, f in await redis.xrange(k.stream)]
    assert types[-2:] == [(b"error", {"msg": "run lost"}), (b"end", {"run_id": "r1"})]
    assert await redis.exists(k.durable) == 0
    await redis.set(k.durable, "r1:1")  # ended, its record left behind
    assert await session._RECOVER(redis, keys=_recover_keys(k), args=_recover_args()) == [Recovery.NOTHING]
    assert await redis.exists(k.durable) == 0
