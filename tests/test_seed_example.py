"""The seed README's example, as written, with only the model swapped for a test model.

It runs on the published API's default path (the process-wide `settings`, prefix `pyaix`), in a session of its own.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel
from redis.asyncio import Redis

from pydantic_ai_stream import Deps, Session, run
from pydantic_ai_stream import settings as process_settings


# 1. Define your deps (includes Redis client)
@dataclass
class MyDeps(Deps):
    def get_scope_id(self) -> int:
        return 1


# 2. Implement session persistence
@dataclass
class MySession(Session):
    session_id: str

    async def load(self) -> None:
        pass  # Load from your storage

    async def save(self) -> None:
        pass  # Save to your storage


# 3. Create agent and run
agent = Agent(TestModel(custom_output_text="Hello back"), deps_type=MyDeps)


async def test_seed_example_runs_as_written(redis: Redis, default_session_id: str) -> None:
    session_id = default_session_id  # "session-1" in the README

    async def main() -> None:
        deps = MyDeps(redis=redis, user_id=1, session_id=session_id)
        await run(
            MySession(session_id=session_id),
            agent,
            "Hello, world!",
            deps=deps,
        )

    # 4. Stream events (in another coroutine/process)
    async def consume() -> list[str]:
        deps = MyDeps(redis=redis, user_id=1, session_id=session_id)
        return [event async for event in deps.listen()]  # type: ignore[misc]

    consumer = asyncio.create_task(consume())
    await main()
    events = [json.loads(e) for e in await asyncio.wait_for(consumer, 10)]

    assert [(e["type"], e["origin"]) for e in (events[0], events[-1])] == [
        ("begin", "pydantic-ai-stream"),
        ("end", "pydantic-ai-stream"),
    ]
    assert events[0]["body"]["session_id"] == session_id
    bodies = [e["body"] for e in events if e["type"] == "event"]
    assert all(e["origin"] == "pydantic-ai" for e in events if e["type"] == "event")
    assert next(b["event"] for b in bodies) == "llm-begin"
    assert "".join(b.get("content", "") + b.get("content_delta", "") for b in bodies) == "Hello back"
    assert {"idx", "event"} <= set(bodies[-1])
    # Keys follow the seed's layout, and the live flag is gone once the run ended.
    stream_key = f"{process_settings.redis_prefix}:1:1:{session_id}"
    assert await redis.exists(stream_key) == 1
    assert await redis.exists(f"{stream_key}:live") == 0
