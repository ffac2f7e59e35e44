"""The durable runs' Lua scripts (`_durable/scripts/*.lua`): each one's KEYS/ARGV contract and every reply, on
the real Redis, through the calls with named arguments."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import Settings
from pydantic_ai_stream._core.keys import QueueKeys, workers_key
from pydantic_ai_stream._durable import scripts
from pydantic_ai_stream._durable.queue import GROUP
from pydantic_ai_stream._durable.scripts import (
    Reservation,
    add_job,
    advertise,
    claim_jobs,
    live_agents,
    reserve,
    unclaimed_jobs,
)
from pydantic_ai_stream._store.scripts import READY_MAXLEN, LuaScript

SCRIPTS = Path(scripts.__file__).parent


@pytest.fixture
def q(settings: Settings) -> QueueKeys:
    return QueueKeys.build(settings.redis_prefix)


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_every_script_states_its_contract_and_is_filled_in_completely() -> None:
    for path in sorted(SCRIPTS.glob("*.lua")):
        header = [line for line in path.read_text().splitlines() if line.startswith("--")]
        assert any(line.startswith("-- KEYS") for line in header), path.name
        assert any(line.startswith("-- ARGV") for line in header), path.name
        assert any(line.startswith("-- Returns") for line in header), path.name
    loaded = [value for value in vars(scripts).values() if isinstance(value, LuaScript)]
    assert len(loaded) == len(list(SCRIPTS.glob("*.lua")))
    for script in loaded:
        assert not re.search(r"\$\w", script.source), script.source[:80]  # a `$` left is Lua's own


async def test_reserve_counts_a_run_until_its_wait_ends_and_refuses_one_past_the_limit(
    redis: Redis, q: QueueKeys
) -> None:
    queued = q.queued(1)
    now = _now_ms()
    await redis.zadd(queued, {"lapsed": now - 1})
    counted = await reserve(redis, q, scope_id=1, member="a", limit=1, now_ms=now, wait_ms=500)
    assert counted is Reservation.COUNTED
    assert await redis.zrange(queued, 0, -1, withscores=True) == [(b"a", now + 500)], "a lapsed run counts no more"
    full = await reserve(redis, q, scope_id=1, member="b", limit=1, now_ms=now, wait_ms=500)
    assert full is Reservation.FULL
    assert await redis.zrange(queued, 0, -1) == [b"a"], "nothing written"
    again = await reserve(redis, q, scope_id=1, member="a", limit=1, now_ms=now + 10, wait_ms=500)
    assert again is Reservation.COUNTED, "a run counted already counts again, full or not"
    assert await redis.zscore(queued, "a") == now + 510
    assert [int(code) for code in Reservation] == [0, 1]


async def test_add_job_adds_it_to_its_scope_which_takes_its_turn_after_the_others(redis: Redis, q: QueueKeys) -> None:
    await add_job(redis, q, scope_id=1, fields={"run_id": "r1", "agent": "a"})
    await add_job(redis, q, scope_id=2, fields={"run_id": "r2", "agent": "a"})
    await add_job(redis, q, scope_id=1, fields={"run_id": "r3", "agent": "a"})
    assert [fields for _, fields in await redis.xrange(q.jobs(1))] == [
        {b"run_id": b"r1", b"agent": b"a"},
        {b"run_id": b"r3", b"agent": b"a"},
    ]
    assert await redis.zrange(q.scopes, 0, -1, withscores=True) == [
        (q.jobs(1).encode(), 1.0),
        (q.jobs(2).encode(), 2.0),
    ], "a scope with jobs waiting keeps its turn"
    assert await redis.get(q.turn) == b"2"
    assert [fields for _, fields in await redis.xrange(q.ready)] == [{b"job": b"1"}] * 3, "a wake-up per job"


async def test_claim_jobs_takes_the_queues_own_jobs_first_then_one_per_scope_turn(redis: Redis, q: QueueKeys) -> None:
    await redis.xgroup_create(q.queue, GROUP, id="0", mkstream=True)
    await redis.xadd(q.queue, {"run_id": "old"})  # added by a version without scopes' turns
    for run_id in ("a1", "a2"):
        await add_job(redis, q, scope_id=1, fields={"run_id": run_id})
    await add_job(redis, q, scope_id=2, fields={"run_id": "b1"})
    await redis.delete(q.ready)
    jobs = await claim_jobs(redis, q, group=GROUP, consumer="w1", count=3)
    assert [fields for _, fields in jobs] == [{b"run_id": b"old"}, {b"run_id": b"a1"}, {b"run_id": b"b1"}]
    pending = await redis.xpending_range(q.queue, GROUP, min="-", max="+", count=10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry_id, b"w1") for entry_id, _ in jobs]
    assert await redis.zrange(q.scopes, 0, -1, withscores=True) == [(q.jobs(1).encode(), 3.0)], "its next turn"
    assert not await redis.exists(q.jobs(2)), "a scope with no job left is deleted"
    assert await redis.xlen(q.ready) == 1, "all it could take, jobs left: another worker wakes"
    [(_, last)] = await claim_jobs(redis, q, group=GROUP, consumer="w2", count=2)
    assert last == {b"run_id": b"a2"}
    assert await redis.xlen(q.ready) == 1, "fewer than asked: no job left, no wake-up"
    assert await claim_jobs(redis, q, group=GROUP, consumer="w2", count=2) == []
    assert READY_MAXLEN > 1


async def test_unclaimed_jobs_counts_the_scopes_jobs_and_the_queues_undelivered_ones(
    redis: Redis, q: QueueKeys
) -> None:
    assert await unclaimed_jobs(redis, q, group=GROUP) == 0, "no queue, no group"
    await add_job(redis, q, scope_id=1, fields={"run_id": "a1"})
    await add_job(redis, q, scope_id=2, fields={"run_id": "b1"})
    await redis.xadd(q.queue, {"run_id": "old"})
    assert await unclaimed_jobs(redis, q, group=GROUP) == 3, "no group yet"
    await redis.xgroup_create(q.queue, GROUP, id="0")
    await claim_jobs(redis, q, group=GROUP, consumer="w1", count=2)
    assert await unclaimed_jobs(redis, q, group=GROUP) == 1


async def test_advertise_writes_the_workers_field_and_deletes_those_that_lapsed(
    redis: Redis, settings: Settings
) -> None:
    workers = workers_key(settings.redis_prefix)
    await redis.hset(workers, mapping={"dead": '1 ["x"]', "garbled": "not a field"})
    before = _now_ms()
    await advertise(redis, workers=workers, worker="w1", ttl_ms=60_000, agents='["a","b"]')
    fields = await redis.hgetall(workers)
    assert set(fields) == {b"w1"}
    until, agents = fields[b"w1"].decode().split(" ", 1)
    assert before + 60_000 <= int(until) <= _now_ms() + 60_000
    assert agents == '["a","b"]'
    assert 59_000 < await redis.pttl(workers) <= 60_000, "the hash lives as long as its field"
    await redis.pexpire(workers, 600_000)
    await advertise(redis, workers=workers, worker="w2", ttl_ms=1_000, agents="[]")
    assert await redis.pttl(workers) > 1_000, "never shortened"


async def test_live_agents_are_those_of_the_workers_whose_field_has_not_lapsed(
    redis: Redis, settings: Settings
) -> None:
    workers = workers_key(settings.redis_prefix)
    assert await live_agents(redis, workers=workers) == []
    await redis.hset(workers, mapping={"dead": '1 ["x"]', "live": f'{_now_ms() + 60_000} ["a"]', "odd": "?"})
    assert [json.loads(value) for value in await live_agents(redis, workers=workers)] == [["a"]]
    assert await redis.hlen(workers) == 3, "reading deletes nothing"
