"""The Lua scripts on their own, against a real Redis: what each writes, returns and refuses."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from types import MappingProxyType

from redis.asyncio import Redis

from pydantic_ai_stream import ActiveRun, CancelState, Runtime
from pydantic_ai_stream._store.active import active_members, active_sessions
from pydantic_ai_stream._store.cluster import append_many, reap_many
from pydantic_ai_stream._store.results import Held, LeaseState, OpenState, Recovered
from pydantic_ai_stream._store.stream import SessionStream
from support import ScopedDeps


def _stream(runtime: Runtime, session_id: str = "s1") -> SessionStream:
    return ScopedDeps.on(runtime, user_id=1, session_id=session_id).handle().stream


async def _opened(stream: SessionStream, run_id: str = "r1") -> str:
    begin = {"session_id": stream.keys.session_id, "run_id": run_id}
    state, begin_id = await stream.open(run_id=run_id, lease_ms=3000, begin=begin, nonce=f"n-{run_id}")
    assert state is OpenState.OPENED
    return begin_id


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


async def _entries(redis: Redis, stream: SessionStream) -> list[tuple[str, str, dict[str, object]]]:
    return [
        (fields[b"type"].decode(), fields[b"origin"].decode(), json.loads(fields[b"body"]))
        for _, fields in await redis.xrange(stream.keys.stream)
    ]


async def test_open_takes_the_flag_starts_a_fresh_stream_and_lists_the_session(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    await redis.xadd(stream.keys.stream, {"type": "info", "origin": "old", "body": "{}"})  # an old run's entries
    await _opened(stream)
    assert await _entries(redis, stream) == [("begin", "pydantic-ai-stream", {"session_id": "s1", "run_id": "r1"})]
    assert await redis.get(stream.keys.live) == b"r1"
    assert 0 < await redis.pttl(stream.keys.live) <= 3000
    assert await redis.zrange(stream.keys.active, 0, -1) == [b"s1"]


async def test_append_writes_only_under_the_lease_and_never_twice(redis: Redis, runtime: Runtime) -> None:
    first, second = _stream(runtime, "s1"), _stream(runtime, "s2")
    known = {"s1": await _opened(first), "s2": await _opened(second, "r2")}
    entries = [("event", "pydantic-ai", {"i": 1}), ("info", "developer", {"i": 2})]
    ids = await append_many(redis, [(first, "r1", known["s1"], entries), (second, "r2", known["s2"], entries[:1])])
    assert all(ids)
    again = await append_many(redis, [(first, "r1", known["s1"], entries)])  # a re-sent call: already there
    assert again == ids[:1]
    assert [e[2] for e in await _entries(redis, first)][1:] == [{"i": 1}, {"i": 2}]
    assert await append_many(redis, [(first, "not-the-holder", ids[0] or "", entries)]) == [None]
    assert await redis.xlen(first.keys.stream) == 3


async def test_a_body_is_written_as_its_json_object_whatever_mapping_holds_it(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    after = await _opened(stream)
    entries = [("info", "developer", MappingProxyType({"city": "Zürich"})), ("info", "developer", None)]
    await append_many(redis, [(stream, "r1", after, entries)])
    assert [fields[b"body"] for _, fields in await redis.xrange(stream.keys.stream)][1:] == [
        '{"city":"Zürich"}'.encode(), b"{}",
    ]  # fmt: skip


async def test_close_writes_end_once_releases_the_flag_and_keeps_the_stream_a_while(
    redis: Redis, runtime: Runtime
) -> None:
    stream = _stream(runtime)
    await _opened(stream)
    assert await stream.close(run_id="r1", grace_ms=60_000, end={"run_id": "r1"})
    assert await stream.close(run_id="r1", grace_ms=60_000, end={"run_id": "r1"}), "a re-sent close finds its end"
    assert [t for t, _, _ in await _entries(redis, stream)] == ["begin", "end"]
    assert await redis.exists(stream.keys.live) == 0
    assert await redis.zrange(stream.keys.active, 0, -1) == []
    assert 0 < await redis.pttl(stream.keys.stream) <= 60_000
    assert not await stream.close(run_id="r2", grace_ms=60_000, end={"run_id": "r2"}), "not its run"


async def test_renew_and_cancel_tell_held_from_cancelled_from_lost(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    await _opened(stream)
    assert await stream.renew(run_id="r1", lease_ms=10_000, wait_ms=60_000) is LeaseState.HELD
    assert await redis.pttl(stream.keys.live) > 3000
    pubsub = redis.pubsub()
    await pubsub.subscribe("announced")
    assert await stream.cancel("announced") == (CancelState.SIGNALLED, "r1")
    assert await stream.cancel("announced") == (CancelState.NONE, ""), "already asked"
    message = None
    async with asyncio.timeout(5):
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(timeout=1.0)
    assert message["data"] == stream.keys.live.encode()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await stream.renew(run_id="r1", lease_ms=10_000, wait_ms=60_000) is LeaseState.CANCEL_REQUESTED
    assert not await stream.is_live()
    assert await stream.renew(run_id="r2", lease_ms=10_000, wait_ms=60_000) is LeaseState.LOST


async def test_reap_ends_only_a_dead_runs_stream(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    await _opened(stream)
    assert not await stream.reap(grace_ms=60_000), "its run is live"
    await redis.delete(stream.keys.live)  # as if its process had died
    assert await stream.reap(grace_ms=60_000)
    assert not await stream.reap(grace_ms=60_000), "already ended"
    assert await _entries(redis, stream) == [
        ("begin", "pydantic-ai-stream", {"session_id": "s1", "run_id": "r1"}),
        ("error", "pydantic-ai-stream", {"msg": "run lost", "reason": "lease expired"}),
        ("end", "pydantic-ai-stream", {}),
    ]
    assert await redis.zrange(stream.keys.active, 0, -1) == []


async def test_prune_drops_dead_sessions_and_hides_cancelled_ones(redis: Redis, runtime: Runtime) -> None:
    streams = [_stream(runtime, f"s{i}") for i in range(4)]
    begin_ids = [await _opened(stream, f"r{i}") for i, stream in enumerate(streams[:3])]
    begin = {"session_id": "s3", "run_id": "r3", "agent": "a3"}
    _, queued_id = await streams[3].open(run_id="r3", lease_ms=60_000, begin=begin, nonce="n", queued=True)
    await redis.delete(streams[0].keys.live)
    await streams[1].cancel("announced")
    assert await active_sessions(redis, [s.keys for s in streams]) == [
        ActiveRun(session_id="s2", run_id="r2", queued=False, started_ms=_ms(begin_ids[2])),
        ActiveRun(session_id="s3", run_id="r3", queued=True, agent="a3", started_ms=_ms(queued_id)),
    ], "each with its `begin`'s agent and time"
    assert sorted(await redis.zrange(streams[0].keys.active, 0, -1)) == [b"s1", b"s2", b"s3"]


async def test_a_run_whose_begin_was_trimmed_away_is_listed_without_its_agent(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    begin_id = await _opened(stream)
    await append_many(redis, [(stream, "r1", begin_id, [("info", "test", {"i": i}) for i in range(3)])])
    await redis.xtrim(stream.keys.stream, maxlen=1)
    [listed] = await active_sessions(redis, [stream.keys])
    assert (listed.run_id, listed.agent, listed.started_ms) == ("r1", "", _ms(begin_id)), "its time from its runs"


async def test_a_queued_run_is_adopted_once_and_a_cancel_ends_it_at_once(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    begin = {"session_id": "s1", "run_id": "r1", "user_prompt": "hi"}
    state, begin_id = await stream.open(run_id="r1", lease_ms=60_000, begin=begin, nonce="n1", queued=True)
    assert state is OpenState.OPENED
    assert await redis.get(stream.keys.live) == b"queued:r1"
    assert await stream.is_live(), "a queued run counts as live"
    assert await stream.open(run_id="r1", lease_ms=60_000, begin=begin, nonce="n2", queued=True) == (
        OpenState.QUEUED, begin_id,
    )  # fmt: skip
    other = {"session_id": "s1", "run_id": "r2"}
    assert await stream.open(run_id="r2", lease_ms=60_000, begin=other, nonce="n3") == (OpenState.BUSY, "")
    adopted = await stream.adopt(run_id="r1", lease_ms=3000, wait_ms=60_000)
    assert adopted is not None
    begin_entry, last_id, continues = adopted
    assert (begin_entry.id, begin_entry.type, begin_entry.body, last_id) == (begin_id, "begin", begin, begin_id)
    assert not continues, "a first part: no answered wait for input"
    assert await redis.get(stream.keys.live) == b"r1"
    assert 0 < await redis.pttl(stream.keys.live) <= 3000
    assert await stream.adopt(run_id="r1", lease_ms=3000, wait_ms=60_000) is None, "adopted once"

    queued = _stream(runtime, "s2")
    await queued.open(run_id="q1", lease_ms=60_000, begin={"session_id": "s2", "run_id": "q1"}, nonce="n", queued=True)
    assert await queued.cancel("announced") == (CancelState.ENDED, "q1")
    assert await _entries(redis, queued) == [
        ("begin", "pydantic-ai-stream", {"session_id": "s2", "run_id": "q1"}),
        ("error", "pydantic-ai-stream", {"msg": "canceled"}),
        ("end", "pydantic-ai-stream", {"run_id": "q1"}),
    ]
    assert not await redis.exists(queued.keys.live)
    assert await queued.adopt(run_id="q1", lease_ms=3000, wait_ms=60_000) is None, "a cancelled queued run never runs"
    assert 0 < await redis.pttl(queued.keys.stream) <= runtime.settings.stream_retention * 1000


async def test_a_durable_run_whose_lease_lapsed_is_taken_over_attempt_by_attempt(
    redis: Redis, runtime: Runtime
) -> None:
    stream = _stream(runtime)
    begin = {"session_id": "s1", "run_id": "r1", "user_prompt": "hi"}
    _, begin_id = await stream.open(run_id="r1", lease_ms=60_000, begin=begin, nonce="n", queued=True)
    adopted = await stream.adopt(run_id="r1", lease_ms=60_000, wait_ms=60_000)
    assert adopted is not None
    [written] = await append_many(redis, [(stream, "r1", begin_id, [("info", "test", {"i": 0})])])
    assert written is not None
    held = await stream.recover(run_id="r1", lease_ms=3000, max_attempts=3, wait_ms=60_000)
    assert isinstance(held, Held), "still held"
    assert 59_000 < held.left_ms <= 60_000, "for as long as its lease lasts"
    await redis.delete(stream.keys.live)  # its worker died: the lease lapsed
    assert not await stream.reap(grace_ms=60_000), "a durable run is not lost while a worker may resume it"
    between = ActiveRun("s1", "r1", queued=True, attempt=1, resuming=True, started_ms=_ms(begin_id))
    assert await active_sessions(redis, [stream.keys]) == [between], "listed, to be resumed"
    await redis.zrem(stream.keys.active, "s1")  # as a listing that met the gap did before
    second = await stream.recover(run_id="r1", lease_ms=3000, max_attempts=3, wait_ms=60_000)
    assert isinstance(second, Recovered)
    assert (second.attempt, second.token, second.begin.id, second.begin.body) == (2, "r1:2", begin_id, begin)
    assert await redis.get(stream.keys.live) == b"r1:2"
    assert await active_members(redis, stream.keys.active) == ["s1"], "listed again by its takeover"
    assert await active_sessions(redis, [stream.keys]) == [
        ActiveRun("s1", "r1", queued=False, attempt=2, started_ms=_ms(begin_id))
    ]
    # The first attempt comes back: its writes are refused; the second's go in after the marker.
    assert await append_many(redis, [(stream, "r1", written, [("info", "test", {"i": 1})])]) == [None]
    assert await append_many(redis, [(stream, "r1:2", second.marker_id, [("info", "test", {"i": 2})])]) != [None]
    await redis.delete(stream.keys.live)
    third = await stream.recover(run_id="r1", lease_ms=3000, max_attempts=3, wait_ms=60_000)
    assert isinstance(third, Recovered)
    assert third.attempt == 3
    await redis.delete(stream.keys.live)
    assert await stream.recover(run_id="r1", lease_ms=3000, max_attempts=3, wait_ms=60_000) is None
    assert [(t, b) for t, _, b in await _entries(redis, stream)] == [
        ("begin", begin),
        ("info", {"i": 0}),
        ("event", {"idx": 0, "event": "resumed", "attempt": 2}),
        ("info", {"i": 2}),
        ("event", {"idx": 0, "event": "resumed", "attempt": 3}),
        ("error", {"msg": "run lost", "reason": "3 attempts failed"}),
        ("end", {"run_id": "r1"}),
    ]
    assert not await redis.exists(stream.keys.durable)


async def test_a_handed_back_attempt_does_not_count_against_max_attempts(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    begin = {"session_id": "s1", "run_id": "r1"}
    await stream.open(run_id="r1", lease_ms=60_000, begin=begin, nonce="n", queued=True)
    assert await stream.adopt(run_id="r1", lease_ms=60_000, wait_ms=60_000) is not None
    refused = await stream.hand_back(token="r1:2", run_id="r1", wait_ms=60_000)
    assert not refused, "not this attempt's lease: refused, not counted"
    assert await stream.hand_back(token="r1", run_id="r1", wait_ms=60_000)  # a deploy
    assert 0 < await redis.pttl(stream.keys.checkpoint) <= 60_000, "the count lives as long as the run is durable"
    second = await stream.recover(run_id="r1", lease_ms=3000, max_attempts=2, wait_ms=60_000)
    assert isinstance(second, Recovered)
    assert second.attempt == 2
    await redis.delete(stream.keys.live)  # its worker died: that counts
    third = await stream.recover(run_id="r1", lease_ms=3000, max_attempts=2, wait_ms=60_000)
    assert isinstance(third, Recovered)
    assert third.attempt == 3
    await redis.delete(stream.keys.live)  # died again: two attempts failed
    assert await stream.recover(run_id="r1", lease_ms=3000, max_attempts=2, wait_ms=60_000) is None
    assert [(t, b) for t, _, b in await _entries(redis, stream)][-2:] == [
        ("error", {"msg": "run lost", "reason": "2 attempts failed"}),
        ("end", {"run_id": "r1"}),
    ]
    assert not await redis.exists(stream.keys.checkpoint, stream.keys.durable)


async def test_closing_a_durable_run_ends_its_durability(redis: Redis, runtime: Runtime) -> None:
    stream = _stream(runtime)
    _, begin_id = await stream.open(
        run_id="r1", lease_ms=60_000, begin={"session_id": "s1", "run_id": "r1"}, nonce="n", queued=True
    )
    assert await stream.adopt(run_id="r1", lease_ms=60_000, wait_ms=60_000) is not None
    assert await redis.get(stream.keys.durable) == b"r1:1"
    assert await stream.close(run_id="r1", grace_ms=60_000, end={"run_id": "r1"})
    assert not await redis.exists(stream.keys.durable)
    assert await stream.recover(run_id="r1", lease_ms=3000, max_attempts=3, wait_ms=60_000) is None
    assert begin_id


async def test_a_checkpoint_is_fenced_by_the_attempts_lease_and_says_where_a_resumed_run_goes_on(
    redis: Redis, runtime: Runtime
) -> None:
    stream = _stream(runtime)
    await stream.open(run_id="r1", lease_ms=60_000, begin={"session_id": "s1", "run_id": "r1"}, nonce="n", queued=True)
    assert await stream.adopt(run_id="r1", lease_ms=60_000, wait_ms=60_000) is not None
    assert await stream.load_checkpoint("r1") is None
    assert await stream.checkpoint(token="r1", run_id="r1", idx=0, kept=0, messages=[b'"a"', b'"b"'], ttl_ms=60_000)
    assert await stream.checkpoint(token="r1", run_id="r1", idx=1, kept=2, messages=[b'"c"'], ttl_ms=60_000)
    assert await stream.load_checkpoint("r1") == (1, [b'"a"', b'"b"', b'"c"'])
    assert await stream.load_checkpoint("r0") is None, "another run's checkpoint is not this one's"
    assert 0 < await redis.pttl(stream.keys.durable) <= 60_000, "a checkpoint keeps the run durable"
    await redis.delete(stream.keys.live)  # the worker died
    second = await stream.recover(run_id="r1", lease_ms=3000, max_attempts=3, wait_ms=60_000)
    assert isinstance(second, Recovered)
    marker = await redis.xrange(stream.keys.stream, min=second.marker_id, max=second.marker_id)
    assert json.loads(marker[0][1][b"body"]) == {"idx": 1, "event": "resumed", "attempt": 2}, "from the checkpoint"
    # The first attempt is refused; the second keeps what came before the point it rewrites from.
    assert not await stream.checkpoint(token="r1", run_id="r1", idx=2, kept=3, messages=[b'"x"'], ttl_ms=60_000)
    assert await stream.checkpoint(token="r1:2", run_id="r1", idx=1, kept=1, messages=[b'"d"'], ttl_ms=60_000)
    assert await stream.load_checkpoint("r1") == (1, [b'"a"', b'"d"'])
    assert await stream.close(run_id="r1:2", grace_ms=60_000, end={"run_id": "r1"})
    assert not await redis.exists(stream.keys.checkpoint, stream.keys.checkpoint_msgs), "an ended run keeps none"

    # A stale checkpoint of an earlier run of the session is replaced, not extended.
    await stream.open(run_id="r2", lease_ms=60_000, begin={"session_id": "s1", "run_id": "r2"}, nonce="m", queued=True)
    assert await stream.adopt(run_id="r2", lease_ms=60_000, wait_ms=60_000) is not None
    await redis.hset(stream.keys.checkpoint, mapping={"run": "r1", "idx": 5, "count": 1})
    await redis.rpush(stream.keys.checkpoint_msgs, b'"old"')
    assert await stream.load_checkpoint("r2") is None
    assert await stream.checkpoint(token="r2", run_id="r2", idx=0, kept=0, messages=[b'"new"'], ttl_ms=60_000)
    assert await stream.load_checkpoint("r2") == (0, [b'"new"'])


async def test_a_new_runs_ids_come_after_every_id_of_the_run_it_replaces(redis: Redis, runtime: Runtime) -> None:
    """A run that ended in the millisecond the next one starts (here: an id ahead of the clock) must not
    share an id with the next run's `begin`: a cursor, or a cached event, names one entry."""
    stream = _stream(runtime)
    await _opened(stream, "r1")
    ahead = f"{int(time.time() * 1000) + 60_000}-5"
    await redis.xadd(stream.keys.stream, {"type": "info", "origin": "test", "body": "{}"}, id=ahead)
    assert await stream.close(run_id="r1", grace_ms=60_000, end={"run_id": "r1"})
    [(end_id, _)] = await redis.xrevrange(stream.keys.stream, count=1)
    begin_id = await _opened(stream, "r2")
    assert _id(begin_id) > _id(end_id.decode()) > _id(ahead)


def _id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def test_reap_says_how_long_a_live_run_lives_on_at_least(redis: Redis, runtime: Runtime) -> None:
    """A check of a live run's stream tells the time to live of its flags: until then only a deletion could find
    it dead, so the stream hub checks it no sooner (`CHECK_AT_MOST_EVERY` at most apart)."""
    stream = _stream(runtime)
    await _opened(stream)
    await redis.pexpire(stream.keys.live, 30_000)
    reap = functools.partial(reap_many, redis, [stream], grace_ms=60_000)
    assert 25_000 < ((await reap())[0] or 0) <= 30_000
    await redis.set(stream.keys.durable, "r1", px=50_000)  # a durable run lives while either does
    assert 45_000 < ((await reap())[0] or 0) <= 50_000
    await redis.delete(stream.keys.live, stream.keys.durable)
    assert await reap() == [None], "ended now"
    assert await reap() == [0], "ended before: nothing lives on"
