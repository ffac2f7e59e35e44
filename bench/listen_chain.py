"""The Listen path without gRPC: CPU per delivery of the stream hub and the listeners' batches, in one process.

`python -m bench.listen_chain [--redis URL] [--sessions M] [--listeners K] [--tokens T] [--rhythm R]` opens M
sessions (each a stream with a `begin` and a live flag, as a running run's) with K listeners each
(`SessionHandle.listen_batches`, a heartbeat of 15 s as `serve` asks), then gives every stream T entries and
waits until every listener has each. The rhythm says how:

- `all` (the default): a round appends one entry to every stream (one call of the writers' script, which
  publishes each stream's notice), then waits for all of them.
- `each`: one stream at a time (the fan-out's rhythm: about one entry a round of the hub's reads), each
  appended by the writers' script and waited for before the next.
- `handed`: no Redis at all after the set-up: each entry is handed straight to the hub's subscriptions of its
  stream, as the hub hands what it read. What a listener's own steps cost.
- `floor`: none of ours: the fan-out floor's listeners (`bench.grpc_floor`'s, a generator per listener awaiting
  its session's next response), each response published as `handed` hands an entry. What a listener costs at
  least, in the same harness.

Prints the process's CPU per delivery over the entries; with `all` and `each` the appends are part of it (the
same on any checkout), and `each` also prints them alone (the same appends to a stream nobody follows). The
collector is tuned as `serve` tunes it. Run it with another checkout's code first on `PYTHONPATH` for a
before/after; it deletes its keys when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis

from pydantic_ai_stream import Runtime, SessionHandle, Settings
from pydantic_ai_stream._core.entry import Entry
from pydantic_ai_stream._core.keys import SessionKeys
from pydantic_ai_stream._edges.process import collect_less
from pydantic_ai_stream._store.scripts import session

from .grpc_floor import AioSession

RHYTHMS = ("all", "each", "handed", "floor")
BODY = json.dumps({"idx": 0, "event": "part_delta", "content_delta": "x" * 20})


async def measure(url: str, sessions: int, listeners: int, tokens: int, rhythm: str) -> tuple[float, float | None]:
    """CPU seconds per delivery over the entries, and (`each`) of the appends alone."""
    collect_less()
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=6))
    settings = Settings(redis_prefix=f"chain{uuid.uuid4().hex[:8]}")
    async with Runtime(redis=redis, settings=settings) as runtime:
        handles = [SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=f"s{i}") for i in range(sessions)]
        unfollowed = runtime.keys(scope_id=1, user_id=1, session_id="unfollowed")
        writes = {keys.stream: _Write(keys) for keys in [h.keys for h in handles] + [unfollowed]}
        async with redis.pipeline(transaction=False) as pipe:
            for write in writes.values():
                pipe.xadd(write.keys.stream, {"type": "begin", "origin": "bench", "body": "{}"})
                pipe.set(write.keys.live, "bench", ex=3600)  # a live run: the hub's dead-run check leaves it
            for write, reply in zip(writes.values(), (await pipe.execute())[::2], strict=True):
                write.last = reply.decode()
        awaited = _Awaited(listeners)

        async def listen(i: int, handle: SessionHandle) -> None:
            async for batch in handle.listen_batches(timeout=None, heartbeat=15.0):
                for entry in batch or ():
                    if entry.type != "begin":
                        awaited.seen(i)

        tasks = [asyncio.create_task(listen(i, h)) for i, h in enumerate(handles) for _ in range(listeners)]
        hub = runtime.hub
        assert hub is not None
        try:
            deadline = time.monotonic() + 120
            while sum(len(f.subscribers) for f in hub._streams.values()) < len(tasks):  # set-up, not measured
                assert time.monotonic() < deadline, "the listeners did not all follow their streams"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # their first reads done
            cpu = time.process_time()
            for token in range(tokens):
                if rhythm == "all":
                    expected = [awaited.expect(i) for i in range(sessions)]
                    await _append(redis, list(writes.values())[:-1])
                    await asyncio.wait_for(asyncio.gather(*expected), 60)
                    continue
                for i, handle in enumerate(handles):
                    expected_one = awaited.expect(i)
                    if rhythm == "each":
                        await _append(redis, [writes[handle.keys.stream]])
                    else:
                        entry = Entry(id=f"{1 << 50}-{token}", type="event", origin="bench", body=json.loads(BODY),
                                      body_json=BODY)  # fmt: skip
                        for subscription in hub._streams[handle.keys.stream].subscribers:
                            subscription.deliver([entry], entry.size)
                    await asyncio.wait_for(expected_one, 60)
            cpu = time.process_time() - cpu
            appends = None
            if rhythm == "each":
                appends = time.process_time()
                for _ in range(tokens * sessions):
                    await _append(redis, [writes[unfollowed.stream]])
                appends = time.process_time() - appends
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await redis.delete(*(key for write in writes.values() for key in (write.keys.stream, write.keys.live)))
    await redis.aclose()
    deliveries = len(tasks) * tokens
    return cpu / deliveries, None if appends is None else appends / deliveries


async def measure_floor(sessions: int, listeners: int, tokens: int) -> float:
    """`floor`: CPU seconds per delivery of the fan-out floor's listeners, no runtime and no Redis."""
    collect_less()
    published = [AioSession() for _ in range(sessions)]
    awaited = _Awaited(listeners)

    async def listen(i: int, session: AioSession) -> None:
        async for _ in session.listen():
            awaited.seen(i)

    begun = [awaited.expect(i) for i in range(sessions)]  # each listener's first response: its `begin`
    tasks = [asyncio.create_task(listen(i, s)) for i, s in enumerate(published) for _ in range(listeners)]
    try:
        await asyncio.wait_for(asyncio.gather(*begun), 120)
        cpu = time.process_time()
        for token in range(tokens):
            for i, session in enumerate(published):
                expected = awaited.expect(i)
                session.publish([f"token {token}".encode()], ended=False)
                await asyncio.wait_for(expected, 60)
        cpu = time.process_time() - cpu
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return cpu / (len(tasks) * tokens)


@dataclass
class _Awaited:
    """By stream: how many of its `listeners` have yet to receive its entry, and the future set when none has."""

    listeners: int
    _left: dict[int, tuple[list[int], asyncio.Future[None]]] = field(default_factory=dict)

    def expect(self, i: int) -> asyncio.Future[None]:
        self._left[i] = ([self.listeners], future := asyncio.get_running_loop().create_future())
        return future

    def seen(self, i: int) -> None:
        """A listener of stream `i` received an entry (one not awaited, such as `begin`, counts for nothing)."""
        if (awaited := self._left.get(i)) is None:
            return
        left, future = awaited
        left[0] -= 1
        if not left[0]:
            del self._left[i]
            future.set_result(None)


@dataclass
class _Write:
    """A stream the bench appends to as its run's writer, and the id of the last entry written there."""

    keys: SessionKeys
    last: str = ""


async def _append(redis: Redis, writes: list[_Write]) -> None:
    """One entry on each stream, in one call of the writers' script (which tells each stream's followers, as the
    checkout's scripts tell them)."""
    entries = [("event", "bench", BODY)]
    batch = [(write.keys, "bench", write.last, entries) for write in writes]
    for write, last in zip(
        writes, await session.append(redis, batch, maxlen=1000, retention_ms=3_600_000), strict=True
    ):
        assert last, "the bench's live flag was lost"
        write.last = last


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.listen_chain", description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--listeners", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--rhythm", choices=RHYTHMS, default="all")
    args = parser.parse_args()
    if args.rhythm == "floor":
        per, appends = asyncio.run(measure_floor(args.sessions, args.listeners, args.tokens)), None
    else:
        per, appends = asyncio.run(measure(args.redis, args.sessions, args.listeners, args.tokens, args.rhythm))
    line = f"{args.sessions} x {args.listeners} listeners, {args.tokens} entries a stream ({args.rhythm}): "
    line += f"{per * 1e6:.1f} us CPU / delivery"
    if appends is not None:
        line += f" (the appends alone: {appends * 1e6:.1f})"
    print(line)


if __name__ == "__main__":
    main()
