"""The stream hub: every listener of a process on one subscriber and one reader, each entry once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import Agent
from redis.asyncio import Redis
from redis.asyncio.client import MonitorCommandInfo
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from pydantic_ai_stream import CursorAheadError, InvalidIdError, ListenTimeoutError, Runtime, Settings, run
from pydantic_ai_stream._core.cursor import Cursor
from pydantic_ai_stream._core.entry import decode
from pydantic_ai_stream._read import hub as _reader
from pydantic_ai_stream._read import notices as _notices
from pydantic_ai_stream._read import subscription as _subscription
from pydantic_ai_stream._read.hub import StreamHub
from pydantic_ai_stream._read.subscription import Subscription
from pydantic_ai_stream._store.redis import own_pool
from pydantic_ai_stream._store.scripts import session
from support import Collector, MemorySession, ScopedDeps, evalsha_calls, has_text, listened_run, scripted_model


def _deps(runtime: Runtime, session_id: str) -> ScopedDeps:
    return ScopedDeps.on(runtime, user_id=1, session_id=session_id)


async def _hub_connections(redis: Redis, name: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The connections named `name`: those subscribed to channels, and those that read streams."""
    clients = await redis.client_list()
    named = [c for c in clients if c.get("name") == name]
    return [c for c in named if int(c.get("sub", 0))], [c for c in named if c.get("cmd") == "xread"]


async def _live_runs(runtime: Runtime, sessions: list[str], gate: asyncio.Event) -> list[asyncio.Task[None]]:
    model = scripted_model(tokens=["a ", "b "], gate=gate)
    return [
        asyncio.create_task(run(MemorySession(session_id=s), Agent(model), "hi", _deps(runtime, s))) for s in sessions
    ]


async def test_many_listeners_share_one_subscriber_and_one_reader(
    redis: Redis, redis_url: str, settings: Settings, runtime: Runtime
) -> None:
    listening = Redis.from_url(redis_url, client_name="listeners")  # the client whose hub we count
    async with Runtime(redis=listening, settings=settings) as listeners:
        gate = asyncio.Event()
        sessions = [f"s{i}" for i in range(10)]
        runs = await _live_runs(runtime, sessions, gate)
        collectors = [Collector(_deps(listeners, s)) for s in sessions for _ in range(5)]
        for collector in collectors:
            await collector.wait_for(has_text("b "))
        subscribers, readers = await _hub_connections(redis, "listeners")
        assert [c["sub"] for c in subscribers] == ["10"], "50 listeners of 10 sessions: one subscriber, 10 channels"
        assert len(readers) == 1, "and one connection reads the streams"
        gate.set()
        await asyncio.wait_for(asyncio.gather(*runs), 5)
        streams = [await collector.done() for collector in collectors]
    for i, events in enumerate(streams):
        assert events[0]["type"] == "begin"
        assert events[-1]["type"] == "end"
        assert [e["id"] for e in events] == sorted({e["id"] for e in events}, key=Cursor.key_of)
        assert events == streams[i - i % 5], "the listeners of a session see the same events"
    await listening.aclose()


async def test_a_new_stream_is_read_at_once(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> None:
    monkeypatch.setattr(_reader, "FULL_READ_EVERY", 3600)  # only as the hub starts: the rest is read when written
    gate = asyncio.Event()
    (first,) = await _live_runs(runtime, ["quiet"], gate)
    quiet = Collector(_deps(runtime, "quiet"))
    await quiet.wait_for(has_text("b "))  # the hub now waits for a silent stream's notices
    await _live_runs(runtime, ["other"], gate)
    late = Collector(_deps(runtime, "other"))
    await late.wait_for(has_text("b "))
    gate.set()
    await asyncio.wait_for(first, 5)
    assert (await late.done())[-1]["type"] == "end"


@contextlib.asynccontextmanager
async def _commands_seen(redis: Redis) -> AsyncIterator[list[MonitorCommandInfo]]:
    """The commands clients send Redis while the context is open (`MONITOR`; a script's own are left out)."""
    seen: list[MonitorCommandInfo] = []
    marker = f"end-{uuid.uuid4().hex}"
    async with redis.monitor() as monitor:

        async def watch() -> None:
            while marker not in (info := await monitor.next_command())["command"]:
                if info["client_type"] != "lua":
                    seen.append(info)

        watching = asyncio.create_task(watch())
        await redis.ping()  # MONITOR is on once it answers anything after it
        yield seen
        await redis.echo(marker)  # everything sent before it has been seen once it is
        await asyncio.wait_for(watching, 30)


async def _reads_settled(runtime: Runtime) -> None:
    """Wait until the hub's read loop has nothing to read and waits to be told (its first rounds done)."""
    hub = runtime.hub
    assert hub is not None
    deadline = time.monotonic() + 30
    while not (hub._kicked is not None and not hub._kicked.done() and not hub._written and hub._reading is None):
        assert time.monotonic() < deadline, "the hub's reads did not settle"
        await asyncio.sleep(0.01)


def _stream_reads(commands: list[MonitorCommandInfo]) -> int:
    return sum(info["command"].upper().startswith("XREAD ") for info in commands)


async def test_appended_entries_come_with_their_notice_and_are_not_read(
    monkeypatch: pytest.MonkeyPatch, redis: Redis, runtime: Runtime
) -> None:
    """A writer's notice carries what it appended: a listener gets the entries without the hub's reading them."""
    monkeypatch.setattr(_reader, "FULL_READ_EVERY", 3600)  # only as the hub starts: the rest is read when written
    owner, listener = await listened_run(runtime)
    await _reads_settled(runtime)
    async with _commands_seen(redis) as commands:
        for i in range(5):
            await owner.add_info({"i": i})
            await owner.add_info({"i": i, "two": True})
            await owner.flush()
            await listener.wait_for(lambda e, i=i: e["type"] == "info" and e["body"] == {"i": i, "two": True})  # type: ignore[misc]
    assert _stream_reads(commands) == 0, [info["command"] for info in commands]
    await owner.stop()
    assert [e["id"] for e in await listener.done()] == await _stream_entries(redis, owner)


async def test_a_notice_past_entries_the_hub_has_not_read_has_them_read_first(
    monkeypatch: pytest.MonkeyPatch, redis: Redis, settings: Settings, runtime: Runtime
) -> None:
    """Entries a writer added without telling, then an append that carries its own: the carried ones do not
    follow on from the hub's cursor, so it reads the stream, and the listener gets every entry in order."""
    monkeypatch.setattr(_reader, "FULL_READ_EVERY", 3600)
    owner, listener = await listened_run(runtime)
    await _reads_settled(runtime)
    quiet = await redis.xadd(owner.key(), {"type": "info", "origin": "own", "body": '{"quiet": true}'})  # no PUBLISH
    token = decode(await redis.get(owner.key_live()) or b"")
    keys = owner.keys()
    async with _commands_seen(redis) as commands:
        await session.append(redis, [(keys, token, decode(quiet), [("info", "own", '{"told": true}')])],
                             maxlen=settings.stream_maxlen, retention_ms=60_000)  # fmt: skip
        await listener.wait_for(lambda e: e["body"] == {"told": True})
    assert _stream_reads(commands) == 1
    await redis.xadd(owner.key(), {"type": "end", "origin": "own", "body": "{}"})
    await redis.publish(owner.key(), "")
    assert [e["id"] for e in await listener.done()] == await _stream_entries(redis, owner)


async def test_a_read_in_flight_skips_what_a_notice_brought_meanwhile(
    redis: Redis, settings: Settings, runtime: Runtime
) -> None:
    """The hub's read was sent before an append whose notice came first: the read's reply holds the entries the
    notice handed out, and only those after them are handed out again."""
    hub = StreamHub(redis=redis, settings=settings)  # no tasks: this test plays its read loop
    stream = runtime.stream(runtime.keys(scope_id=1, user_id=1, session_id="s1"))
    begin = decode(await redis.xadd(stream.keys.stream, {"type": "begin", "origin": "o", "body": "{}"}))
    followed = _reader._Followed(stream=stream, grace_ms=0, cursor=Cursor(begin))
    subscription = Subscription(hub=hub, stream=stream, after=Cursor(begin))
    followed.subscribers.add(subscription)
    hub._streams[stream.keys.stream] = followed
    ids = [decode(await redis.xadd(stream.keys.stream, {"type": "info", "origin": "o", "body": f'{{"i":{i}}}'}))
           for i in range(3)]  # fmt: skip
    carried = "\0".join([begin, ids[0], "info", "o", '{"i":0}', ids[1], "info", "o", '{"i":1}'])
    hub._on_written(stream.keys.stream, carried)
    pool = own_pool(redis, socket_timeout=10)
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        hub._in_read = dict(hub._streams)  # the read, sent at the cursor from before the notice
        await connection.send_command("XREAD", "STREAMS", stream.keys.stream, begin)
        hub._dispatch(await connection.read_response())
    finally:
        await pool.disconnect()
    assert [e.id for e in await subscription.next(0)] == ids
    assert followed.cursor.id == ids[-1]
    await redis.delete(stream.keys.stream)


async def test_a_listener_that_falls_behind_rereads_from_redis(
    monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    monkeypatch.setattr(_subscription, "MAX_BUFFERED", 5)
    monkeypatch.setattr(_reader, "READ_COUNT", 4)  # the hub's reads
    monkeypatch.setattr(_subscription, "READ_COUNT", 4)  # the catch-up's pages
    tokens = [f"t{i} " for i in range(40)]
    await run(MemorySession(session_id="s1"), Agent(scripted_model(tokens=tokens)), "hi", _deps(runtime, "s1"))
    expected = [e async for e in _deps(runtime, "s1").listen(serialize=False)]
    slow = _deps(runtime, "s1").listen(serialize=False)
    seen = [await anext(slow)]
    fast = [e async for e in _deps(runtime, "s1").listen(serialize=False)]  # overflows the slow one's buffer
    seen += [e async for e in slow]
    assert seen == expected == fast


async def test_listeners_see_redis_going_away(settings: Settings) -> None:
    # No retries: redis-py's default three, backing off, spent 3 s before the error the test is about.
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    async with Runtime(redis=unreachable, settings=settings) as runtime:
        with pytest.raises(RedisConnectionError):
            async for _ in _deps(runtime, "s1").listen(wait=3):
                pass
    await unreachable.aclose()


async def test_silent_streams_of_dead_runs_are_ended_in_one_check(redis: Redis, runtime: Runtime) -> None:
    owners = [_deps(runtime, f"s{i}") for i in range(20)]
    for deps in owners:
        await deps.start()
        await deps.add_info({"working": True})
        await deps.flush()
    listeners = [Collector(_deps(runtime, deps.session_id)) for deps in owners]
    for listener in listeners:
        await listener.wait_for(lambda e: e["type"] == "info")
    before = await evalsha_calls(redis)
    await redis.delete(*(deps.key_live() for deps in owners))  # as if their process had died
    for listener in listeners:
        events = await listener.done(timeout=10)
        assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [("error", "run lost"), ("end", None)]
    assert await evalsha_calls(redis) - before <= 6, "20 dead runs found by a few batched checks"
    for deps in owners:
        await deps.stop()


async def _stream_entries(redis: Redis, deps: ScopedDeps) -> list[str]:
    """Ids of every entry in the session's stream, straight from Redis."""
    return [entry_id.decode() for entry_id, _ in await redis.xrange(deps.key())]


async def test_a_rejoin_while_a_shared_read_is_in_flight_loses_nothing(redis: Redis, runtime: Runtime) -> None:
    gate = asyncio.Event()
    (task,) = await _live_runs(runtime, ["s1"], gate)
    first = _deps(runtime, "s1").listen(serialize=False)
    async for event in first:  # the hub reads all there is so far
        if has_text("b ")(event):  # type: ignore[arg-type]
            break
    await first.aclose()  # a round of the hub's reads may still carry the cursor of the listener that left
    rejoined = Collector(_deps(runtime, "s1"))
    resumed = Collector(_deps(runtime, "s1"), after=(await _stream_entries(redis, _deps(runtime, "s1")))[1])
    await rejoined.wait_for(lambda e: e["type"] == "begin")
    gate.set()
    await asyncio.wait_for(task, 5)
    ids = await _stream_entries(redis, _deps(runtime, "s1"))
    assert [e["id"] for e in await rejoined.done()] == ids
    assert [e["id"] for e in await resumed.done()] == ids[2:]


async def test_one_listeners_cursor_never_changes_what_another_receives(redis: Redis, runtime: Runtime) -> None:
    gate = asyncio.Event()
    (task,) = await _live_runs(runtime, ["s1"], gate)
    await Collector(_deps(runtime, "s1")).wait_for(has_text("b "))
    newest = (await _stream_entries(redis, _deps(runtime, "s1")))[-1]
    far_future = f"{int(newest.split('-')[0]) + 10**9}-0"
    for cursor, error in (("99999999999999999999-0", InvalidIdError), (far_future, CursorAheadError)):
        with pytest.raises(error):
            async for _ in _deps(runtime, "s1").listen(after=cursor):
                pass
    others = [Collector(_deps(runtime, "s1")), Collector(_deps(runtime, "s1"), after=newest)]
    await others[0].wait_for(has_text("b "))
    gate.set()
    await asyncio.wait_for(task, 5)
    ids = await _stream_entries(redis, _deps(runtime, "s1"))
    assert [e["id"] for e in await others[0].done()] == ids
    assert [e["id"] for e in await others[1].done()] == ids[ids.index(newest) + 1 :]


@pytest.mark.parametrize("killed", ["subscriber", "reader"])
async def test_a_killed_hub_connection_is_reopened_and_loses_nothing(
    killed: str, redis: Redis, redis_url: str, settings: Settings, runtime: Runtime
) -> None:
    listening = Redis.from_url(redis_url, client_name="hub-under-test")
    async with Runtime(redis=listening, settings=settings) as listeners:
        gate = asyncio.Event()
        (task,) = await _live_runs(runtime, ["s1"], gate)
        collector = Collector(_deps(listeners, "s1"))
        await collector.wait_for(has_text("b "))
        subscribers, readers = await _hub_connections(redis, "hub-under-test")
        assert len(subscribers) == len(readers) == 1
        (victim,) = subscribers if killed == "subscriber" else readers
        await redis.client_kill_filter(_id=victim["id"])
        deadline = time.monotonic() + 10
        while not (again := (await _hub_connections(redis, "hub-under-test"))[0]) or again[0]["id"] == victim["id"]:
            assert time.monotonic() < deadline, "the hub did not subscribe again"
            await asyncio.sleep(0.01)
        assert again[0]["sub"] == "1"
        gate.set()
        await asyncio.wait_for(task, 5)
        assert [e["id"] for e in await collector.done()] == await _stream_entries(redis, _deps(runtime, "s1"))
    await listening.aclose()


async def test_a_slow_listener_of_large_entries_holds_little_and_misses_nothing(redis: Redis, runtime: Runtime) -> None:
    writer = _deps(runtime, "big")
    await writer.start()
    slow = _deps(runtime, "big").listen_entries()
    assert (await anext(slow)).type == "begin"  # type: ignore[union-attr]
    fast = Collector(_deps(runtime, "big"))  # keeps the hub reading, and delivering to the slow one's buffer
    blob = "x" * 50_000
    for i in range(100):  # 5 MB: five times what a listener may have waiting
        await writer.add_info({"i": i, "blob": blob})
    await writer.stop()
    await fast.done()
    received = [entry async for entry in slow]
    assert [e.body["i"] for e in received if e is not None and e.type == "info"] == list(range(100))
    ids = await _stream_entries(redis, writer)
    assert [e.id for e in received if e is not None] == ids[1:]


async def test_a_listener_joining_as_the_last_read_loop_winds_down_gets_a_loop_of_its_own(
    monkeypatch: pytest.MonkeyPatch, redis: Redis, redis_url: str, settings: Settings, runtime: Runtime
) -> None:
    """The last listener leaves; while the hub's read loop winds down (held in its clean-up here), a new
    listener comes: it gets the run's entries written from then on, read for it, and a dead run's end."""
    winding, release = asyncio.Event(), asyncio.Event()
    close = _notices.WriteNotices.aclose

    async def held_close(notices: _notices.WriteNotices) -> None:
        winding.set()
        await release.wait()
        await close(notices)

    monkeypatch.setattr(_notices.WriteNotices, "aclose", held_close)
    owner = _deps(runtime, "s1")
    await owner.start()
    await owner.add_info({"i": 0})
    await owner.flush()
    listening = Redis.from_url(redis_url, client_name="winding-down")
    async with Runtime(redis=listening, settings=settings) as listeners:
        first = Collector(_deps(listeners, "s1"))
        await first.wait_for(lambda e: e["type"] == "info")
        first.task.cancel()  # the process's last listener leaves
        await asyncio.gather(first.task, return_exceptions=True)
        await asyncio.wait_for(winding.wait(), 5)  # the read loop is in its clean-up
        late = Collector(_deps(listeners, "s1"))
        await late.wait_for(lambda e: e["type"] == "info")
        await owner.add_info({"i": 1})  # written after the late listener read what was there
        await owner.flush()
        await late.wait_for(lambda e: e["type"] == "info" and e["body"] == {"i": 1})
        release.set()
        await redis.delete(owner.key_live())  # as if the run's process had died
        events = await late.done(timeout=10)
        assert [(e["type"], e["body"].get("msg")) for e in events[-2:]] == [("error", "run lost"), ("end", None)]
    await listening.aclose()
    await owner.stop()


def _live_timers(loop: asyncio.AbstractEventLoop) -> int:
    """The timers in the loop's heap not cancelled: a cancelled one (each Redis read's deadline leaves one) stays
    in the heap until the loop sweeps it, whenever that is."""
    return sum(not timer.cancelled() for timer in loop._scheduled)  # type: ignore[attr-defined]


async def test_long_waits_end_on_the_hubs_tick_without_a_timer_each(
    monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    """A wait of `COARSE_WAIT` or longer (a heartbeat's, a silence timeout's) is ended by the hub's tick: the
    heartbeats and the timeout still come, and thousands of waiting listeners add no timers to the loop."""
    owner = _deps(runtime, "s1")
    await owner.start()
    await owner.add_info({"working": True})  # a live run, then silence
    await owner.flush()
    handle = owner.handle()
    monkeypatch.setattr(_subscription, "COARSE_WAIT", 0.2)
    started, beats = time.monotonic(), 0
    async for batch in handle.listen_batches(heartbeat=0.3, timeout=None):
        beats += batch is None
        if beats == 3:
            break
    assert time.monotonic() - started >= 0.9, "three heartbeats 0.3 s apart"
    last = (await _stream_entries(runtime.redis, owner))[-1]
    with pytest.raises(ListenTimeoutError):
        async for _ in handle.listen_batches(after=last, timeout=0.4):
            pass

    loop, hub = asyncio.get_running_loop(), runtime.hub
    assert hub is not None
    timers = _live_timers(loop)
    waiting: list[asyncio.Task[object]] = []
    deadline = time.monotonic() + 30
    for _ in range(4):  # 50 at a time: each opens with a read of its own on the client's pool
        waiting += [
            asyncio.create_task(anext(aiter(handle.listen_batches(after=last, heartbeat=15)))) for _ in range(50)
        ]
        while (due := sum(map(len, hub._due.values()))) < len(waiting):  # every listener waits, on the tick
            assert time.monotonic() < deadline, f"{due} of {len(waiting)} listeners wait"
            await asyncio.sleep(0.01)
    assert _live_timers(loop) < timers + 20
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await owner.stop()


async def test_a_listener_asks_the_tick_once_a_heartbeat_however_often_entries_come(
    monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    """Each wait of a listener with a heartbeat ends by the hub's tick, but a wait that ends after the tick it
    already asked for asks for none: the tick asks again for the wait's end. The heartbeat still comes only
    after a whole heartbeat of silence."""
    monkeypatch.setattr(_subscription, "COARSE_WAIT", 0.2)
    owner = _deps(runtime, "s1")
    await owner.start()
    await owner.flush()
    hub = runtime.hub
    assert hub is not None
    # The listener's silence starts no sooner than each entry's write: the heartbeat's bounds count from there.
    silent_since = time.monotonic()
    batches = owner.handle().listen_batches(heartbeat=1.0, timeout=None)
    asked = 0
    for i in range(20):
        # The listener waits (it runs as soon as this test awaits) when the entry comes.
        waiting = asyncio.ensure_future(anext(batches))
        written_at = time.monotonic()
        await owner.add_info({"i": i})
        await owner.flush()
        while True:
            batch = await asyncio.wait_for(waiting, 30)
            assert batch is not None or time.monotonic() - silent_since >= 1.0, "a heartbeat only after 1 s of silence"
            if batch is not None and batch[-1].body == {"i": i}:
                break
            waiting = asyncio.ensure_future(anext(batches))
        silent_since = written_at
        asked = max(asked, sum(map(len, hub._due.values())))
    assert asked <= 1, f"{asked} ticks asked for at once"
    assert await asyncio.wait_for(anext(batches), 30) is None
    assert time.monotonic() - silent_since >= 1.0, "a heartbeat after a whole heartbeat of silence"
    await batches.aclose()  # type: ignore[attr-defined]
    await owner.stop()


async def test_entries_of_a_writer_that_does_not_publish_still_come(redis: Redis, runtime: Runtime) -> None:
    """A writer that adds to a stream without telling (an older release, a script of one's own): the hub's
    reads of every stream it follows, once `FULL_READ_EVERY`, find its entries."""
    owner = _deps(runtime, "s1")
    await owner.start()
    await owner.flush()
    listener = Collector(_deps(runtime, "s1"))
    await listener.wait_for(lambda e: e["type"] == "begin")
    await redis.xadd(owner.key(), {"type": "info", "origin": "own", "body": '{"quiet": true}'})  # no PUBLISH
    await listener.wait_for(lambda e: e["type"] == "info" and e["body"] == {"quiet": True})
    await owner.stop()
    assert [e["id"] for e in await listener.done()] == await _stream_entries(redis, owner)


@pytest.mark.parametrize(
    "client", [{"protocol": 2}, {"protocol": 3}, {"protocol": 2, "decode_responses": True}, {"decode_responses": True}]
)
async def test_every_kind_of_client_hears_the_notices(
    client: dict[str, Any], monkeypatch: pytest.MonkeyPatch, redis_url: str, redis: Redis, settings: Settings
) -> None:
    """The subscriber's messages are arrays in RESP2 and pushes in RESP3 (redis-py's default), bytes or decoded:
    all are heard, so an entry comes when written (here the hub reads every stream only as it starts)."""
    monkeypatch.setattr(_reader, "FULL_READ_EVERY", 3600)
    resp2 = Redis.from_url(redis_url, **client)
    async with Runtime(redis=resp2, settings=settings) as runtime:
        owner = _deps(runtime, "s1")
        await owner.start()
        await owner.flush()
        listener = Collector(_deps(runtime, "s1"))
        await listener.wait_for(lambda e: e["type"] == "begin")
        for i in range(3):
            await owner.add_info({"i": i})
            await owner.flush()
            await listener.wait_for(lambda e, i=i: e["type"] == "info" and e["body"] == {"i": i})  # type: ignore[misc]
        await owner.stop()
        assert [e["id"] for e in await listener.done()] == await _stream_entries(redis, owner)
    await resp2.aclose()


async def test_a_silent_live_run_is_checked_no_sooner_than_its_lease_could_lapse(
    monkeypatch: pytest.MonkeyPatch, redis: Redis, settings: Settings
) -> None:
    checks: list[float] = []
    reap_many = _reader.reap_many

    async def counted(*args: Any, **kwargs: Any) -> list[int | None]:
        checks.append(time.monotonic())
        return await reap_many(*args, **kwargs)

    monkeypatch.setattr(_reader, "reap_many", counted)
    long_lease = settings.model_copy(update={"lease_ttl": 30.0, "lease_renew_interval": 10.0})
    async with Runtime(redis=redis, settings=long_lease) as runtime:
        owner = _deps(runtime, "s1")
        await owner.start()
        await owner.add_info({"working": True})
        await owner.flush()
        listener = Collector(_deps(runtime, "s1"))
        await listener.wait_for(lambda e: e["type"] == "info")
        hub = runtime.hub
        assert hub is not None
        followed = hub._streams[owner.key()]
        deadline = time.monotonic() + 30
        while not checks or followed.check_at < checks[0] + _reader.CHECK_AFTER * 2:  # checked, and scheduled
            assert time.monotonic() < deadline, "the silent stream was not checked"
            await asyncio.sleep(0.05)
        # Its lease has 20-30 s to live: the next check comes after the longest gap, not after a second.
        assert followed.check_at - checks[0] >= _reader.CHECK_AT_MOST_EVERY - 0.1
        await owner.stop()
        assert (await listener.done())[-1]["type"] == "end"
