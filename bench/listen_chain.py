"""The Listen path without gRPC: CPU per delivery of the stream hub and the listeners' batches, in one process.

`python -m bench.listen_chain [--redis URL] [--sessions M] [--listeners K] [--tokens T]` opens M sessions
(each a stream with a `begin` and a live flag, as a running run's) with K listeners each
(`SessionHandle.listen_batches`, a heartbeat of 15 s as `serve` asks), then appends T rounds of one entry to
every stream (one pipeline a round, with the notice the writers' scripts publish) and waits until every
listener has it. Prints the process's CPU per
delivery over the rounds; the appends are part of it (about a fifth), the same on any checkout. Run it with
another checkout's code first on `PYTHONPATH` for a before/after; it deletes its keys when done.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import uuid

from redis.asyncio import BlockingConnectionPool, Redis

from pydantic_ai_stream import Runtime, SessionHandle, Settings


async def measure(url: str, sessions: int, listeners: int, tokens: int) -> float:
    """CPU seconds per delivery over `tokens` rounds."""
    gc.freeze()
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=6))
    settings = Settings(redis_prefix=f"chain{uuid.uuid4().hex[:8]}")
    async with Runtime(redis=redis, settings=settings) as runtime:
        handles = [SessionHandle.of(runtime, scope_id=1, user_id=1, session_id=f"s{i}") for i in range(sessions)]
        async with redis.pipeline(transaction=False) as pipe:
            for handle in handles:
                pipe.xadd(handle.keys.stream, {"type": "begin", "origin": "bench", "body": "{}"})
                pipe.set(handle.keys.live, "bench", ex=3600)  # a live run: the hub's dead-run check leaves it
            await pipe.execute()
        want, waiting, done = 0, 0, asyncio.Event()

        async def listen(handle: SessionHandle) -> None:
            nonlocal waiting
            got = 0
            async for batch in handle.listen_batches(timeout=None, heartbeat=15.0):
                for entry in batch or ():
                    if entry.type != "begin":
                        got += 1
                        if got == want:
                            waiting -= 1
                            if not waiting:
                                done.set()

        tasks = [asyncio.create_task(listen(h)) for h in handles for _ in range(listeners)]
        body = json.dumps({"idx": 0, "event": "part_delta", "content_delta": "x" * 20})
        try:
            await asyncio.sleep(2)  # the listeners open and follow their streams (set-up, not measured)
            cpu = time.process_time()
            for _ in range(tokens):
                want, waiting = want + 1, len(tasks)
                done.clear()
                await _append(redis, handles, body)
                await asyncio.wait_for(done.wait(), 60)
            cpu = time.process_time() - cpu
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await redis.delete(*(key for h in handles for key in (h.keys.stream, h.keys.live)))
    await redis.aclose()
    return cpu / (len(tasks) * tokens)


async def _append(redis: Redis, handles: list[SessionHandle], body: str) -> None:
    """One entry on every stream, in one pipeline, each told on the stream's channel as the writers' scripts tell
    it (a checkout whose hub does not listen reads them anyway)."""
    async with redis.pipeline(transaction=False) as pipe:
        for handle in handles:
            pipe.xadd(handle.keys.stream, {"type": "event", "origin": "bench", "body": body})
            pipe.publish(handle.keys.stream, "")
        await pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.listen_chain", description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--listeners", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=30)
    args = parser.parse_args()
    per = asyncio.run(measure(args.redis, args.sessions, args.listeners, args.tokens))
    print(f"{args.sessions} x {args.listeners} listeners, {args.tokens} rounds: {per * 1e6:.1f} us CPU / delivery")


if __name__ == "__main__":
    main()
