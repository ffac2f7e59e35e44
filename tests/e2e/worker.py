"""A separate process running one session whose model streams a token and then stalls.

Usage: python worker.py REDIS_URL SESSION_ID (key prefix and lease timing from `PYDANTIC_AI_STREAM_*`)
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from pydantic_ai import Agent
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis

from pydantic_ai_stream import AgxCanceledError, Deps, RedisSession, Runtime, run


@dataclass
class WorkerDeps(Deps):
    def get_scope_id(self) -> int:
        return 1


async def stalling(messages: object, info: AgentInfo):  # type: ignore[no-untyped-def]
    yield "working "
    await asyncio.Event().wait()


async def main(url: str, session_id: str) -> int:
    redis = Redis.from_url(url)
    try:
        async with Runtime(redis=redis) as runtime:  # the process's settings, read from its environment
            session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=1, session_id=session_id)
            await run(
                session,
                Agent(FunctionModel(stream_function=stalling)),
                "go",
                WorkerDeps(redis=redis, runtime=runtime, user_id=1, session_id=session_id),
            )
    except AgxCanceledError:
        print("canceled", flush=True)
        return 3
    finally:
        await redis.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:3])))
