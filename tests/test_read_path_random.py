"""The read path under random timing: listeners join, leave and resume from any cursor while runs write.

Each listener must receive exactly the stream's entries after its cursor, in order, once, up to `end`;
or a clear refusal: `CursorAheadError` for a cursor past the stream's end, `CursorExpiredError` once its
position was trimmed away. Seeded and bounded; the stream's whole history is recorded before each trim.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import pytest
from redis.asyncio import RedisCluster

from pydantic_ai_stream import CursorAheadError, CursorExpiredError, Runtime, Settings
from support import ScopedDeps

SESSIONS = 4
ENTRIES = 250
LISTENERS = 48


@dataclass
class _Leg:
    """One listen call: where it started, what it got, how it ended."""

    session: str
    cursor: str | None
    kind: str
    received: list[str] = field(default_factory=list)
    left_early: bool = False
    error: BaseException | None = None


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings, with its streams kept a minute after their run (not an hour)."""
    return Settings(redis_prefix=settings.redis_prefix, stream_retention=60)


@dataclass
class _World:
    runtime: Runtime
    rng: random.Random
    history: dict[str, dict[str, None]] = field(default_factory=dict)
    """Every entry id each stream ever held, in order (recorded before each trim)."""
    legs: list[_Leg] = field(default_factory=list)
    done: bool = False

    def deps(self, session: str) -> ScopedDeps:
        return ScopedDeps.on(self.runtime, user_id=1, session_id=session)

    async def snapshot(self, session: str) -> list[str]:
        ids = [entry_id.decode() for entry_id, _ in await self.runtime.redis.xrange(self.deps(session).key())]
        self.history.setdefault(session, {}).update(dict.fromkeys(ids))
        return ids


async def _write(world: _World, session: str) -> None:
    await asyncio.sleep(world.rng.uniform(0, 0.3))  # staggered starts: pacing, not synchronisation
    deps = world.deps(session)
    await deps.start()
    for i in range(ENTRIES):
        await deps.add_info({"i": i})
        if world.rng.random() < 0.1:
            await asyncio.sleep(world.rng.uniform(0, 0.02))  # bursts and pauses
    # Kept the settings' minute, not 5 s: the last listeners and the final look come later on a busy machine.
    await deps.stop(grace_period=world.runtime.settings.stream_retention)


async def _trim(world: _World, session: str) -> None:
    for _ in range(3):
        await asyncio.sleep(world.rng.uniform(0.1, 0.4))
        ids = await world.snapshot(session)
        if len(ids) > 10:
            minid = ids[world.rng.randrange(len(ids) // 2)]
            await world.runtime.redis.xtrim(world.deps(session).key(), minid=minid, approximate=False)


async def _cursor(world: _World, session: str, n: int) -> tuple[str | None, str]:
    ids = await world.snapshot(session)
    kept = set(ids)
    trimmed = [i for i in world.history.get(session, {}) if i not in kept]
    choice = world.rng.random()
    if n % 8 == 0:  # every kind is tried, however the draws fall
        return f"{int(time.time() * 1000) + world.rng.randrange(10**6, 10**12)}-0", "far"
    if choice < 0.3 or not ids:
        return None, "begin"
    if choice < 0.4 and trimmed:
        return world.rng.choice(trimmed), "trimmed"
    return world.rng.choice(ids), "valid"


async def _listen(world: _World, session: str, cursor: str | None, kind: str) -> None:
    while True:
        leg = _Leg(session=session, cursor=cursor, kind=kind)
        world.legs.append(leg)
        leave_after = world.rng.choice([None, None, 1, 5, 40])
        listener = world.deps(session).listen_entries(wait=10, timeout=10, after=cursor)
        try:
            async for entry in listener:
                assert entry is not None
                leg.received.append(entry.id)
                if len(leg.received) == leave_after and entry.type != "end":
                    leg.left_early = True
                    break
        except (CursorAheadError, CursorExpiredError) as e:
            leg.error = e
            return
        finally:
            await listener.aclose()  # type: ignore[attr-defined]
        if not leg.left_early:
            return
        cursor, kind = leg.received[-1], "rejoin"  # resume at once where this leg left


async def _listeners(world: _World) -> None:
    tasks = []
    for n in range(LISTENERS):
        await asyncio.sleep(world.rng.uniform(0, 0.03))
        session = f"s{world.rng.randrange(SESSIONS)}"
        cursor, kind = await _cursor(world, session, n)
        tasks.append(asyncio.create_task(_listen(world, session, cursor, kind)))
    await asyncio.gather(*tasks)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_listener_gets_exactly_the_entries_after_its_cursor(runtime: Runtime, seed: int) -> None:
    await _check_read_path(runtime, seed)


async def test_every_listener_gets_exactly_the_entries_after_its_cursor_on_a_cluster(
    cluster_url: str, settings: Settings
) -> None:
    cluster = await RedisCluster.from_url(cluster_url).initialize()
    try:
        async with Runtime(redis=cluster, settings=settings) as runtime:
            await _check_read_path(runtime, 4)  # listeners read on their own, not through a hub
    finally:
        await cluster.aclose()


async def _check_read_path(runtime: Runtime, seed: int) -> None:
    world = _World(runtime=runtime, rng=random.Random(seed))
    sessions = [f"s{i}" for i in range(SESSIONS)]
    writers = [asyncio.create_task(_write(world, s)) for s in sessions]
    trims = [asyncio.create_task(_trim(world, s)) for s in sessions[:2]]
    await asyncio.wait_for(asyncio.gather(*writers, *trims, _listeners(world)), 60)
    final = {s: await world.snapshot(s) for s in sessions}
    outcomes: dict[str, int] = {}
    for leg in world.legs:
        history = list(world.history[leg.session])
        outcome = leg.kind
        if isinstance(leg.error, CursorAheadError):
            assert leg.kind == "far", leg
            outcome = "ahead"
        elif leg.kind == "far":
            assert isinstance(leg.error, CursorExpiredError), "a far cursor on a stream not there yet"
            outcome = "far, no stream"
        elif isinstance(leg.error, CursorExpiredError):
            history_start = history[0] if leg.cursor is None else leg.cursor
            position = leg.received[-1] if leg.received else history_start
            assert position not in final[leg.session], f"refused, yet its position is still kept: {leg}"
            start = 0 if leg.cursor is None else history.index(leg.cursor) + 1
            assert leg.received == history[start : start + len(leg.received)]
            outcome = "expired"
        else:
            assert leg.error is None, leg
            assert leg.kind != "trimmed", leg
            start = 0 if leg.cursor is None else history.index(leg.cursor) + 1
            expected = history[start:]
            if leg.left_early:
                expected = expected[: len(leg.received)]
            assert leg.received == expected, f"{leg.kind} leg of {leg.session} from {leg.cursor}"
            ended_at = (expected or [leg.cursor])[-1]
            assert leg.left_early or ended_at == final[leg.session][-1], "up to `end`, or resumed after it"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert {"rejoin", "valid", "begin"} <= set(outcomes), outcomes
    assert {"ahead", "far, no stream"} & set(outcomes), outcomes
