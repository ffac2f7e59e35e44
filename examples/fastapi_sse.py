"""A chat backend on FastAPI: runs stream to the browser as SSE, resumable with `Last-Event-ID`.

    pip install -e ".[example]"
    uvicorn examples.fastapi_sse:app                                # an embedded Redis, as `serve` starts
    REDIS_URL=redis://localhost:6379 uvicorn examples.fastapi_sse:app

Without `MODEL` (e.g. `MODEL=openai:gpt-4o-mini`), the agent uses pydantic-ai's `TestModel`, so the
example runs without an API key. User and scope are fixed (user 1, scope 1), as in the seed example:
a real app takes them from its authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Query, Response
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.models.test import TestModel
from redis.asyncio import Redis
from sse_starlette import EventSourceResponse, ServerSentEvent

from pydantic_ai_stream import (
    AgxCanceledError,
    CursorAheadError,
    CursorExpiredError,
    Deps,
    InvalidIdError,
    RedisSession,
    Session,
    SessionBusyError,
    start_run,
)
from pydantic_ai_stream.server import ServerSettings, redis_client

logger = logging.getLogger(__name__)

USER_ID, SCOPE_ID = 1, 1


@dataclass
class ChatDeps(Deps):
    def get_scope_id(self) -> int:
        return SCOPE_ID


def build_agent() -> Agent[ChatDeps, str]:
    """The chat agent: a real model from `MODEL`, else `TestModel`; one tool."""
    agent = Agent(os.environ.get("MODEL") or TestModel(), deps_type=ChatDeps)

    @agent.tool
    async def get_weather(ctx: RunContext[ChatDeps], city: str) -> str:
        """The weather in `city`."""
        await ctx.deps.add_info({"msg": f"looking up the weather in {city}"})
        return f"sunny in {city}"

    return agent


class ChatRequest(BaseModel):
    prompt: str
    session_id: str


def create_app(redis: Redis, agent: Agent[ChatDeps, str] | None = None) -> FastAPI:
    """The app, on the given Redis client and agent (tests inject theirs)."""
    chat_agent = agent or build_agent()
    runs: set[asyncio.Task[None]] = set()  # strong references: a task nobody holds may be collected

    def deps(session_id: str) -> ChatDeps:
        chat = ChatDeps(redis=redis, user_id=USER_ID, session_id=session_id)
        try:
            chat.keys()
        except InvalidIdError as e:
            raise HTTPException(422, str(e)) from e
        return chat

    def run_finished(task: asyncio.Task[None]) -> None:
        runs.discard(task)
        if not task.cancelled() and task.exception() and not isinstance(task.exception(), AgxCanceledError):
            logger.error("chat run failed", exc_info=task.exception())

    def sse(events: AsyncIterator[dict[str, Any] | str]) -> EventSourceResponse:
        async def messages() -> AsyncIterator[ServerSentEvent]:
            async for event in events:
                assert isinstance(event, dict)
                yield ServerSentEvent(data=json.dumps(event), id=event["id"], event=event["type"])

        return EventSourceResponse(messages(), ping=15)

    app = FastAPI(title="pydantic-ai-stream chat")

    @app.post("/chat")
    async def chat(request: ChatRequest) -> EventSourceResponse:
        """Start a run and stream its events; 409 if the session is already running."""
        chat_deps = deps(request.session_id)
        session = RedisSession(redis=redis, scope_id=SCOPE_ID, user_id=USER_ID, session_id=request.session_id)
        try:
            # Returns once the session is ours and `begin` is written, so a busy session is a 409, not a stream.
            task = await start_run(session, chat_agent, request.prompt, chat_deps)
        except SessionBusyError as e:
            raise HTTPException(409, str(e)) from e
        runs.add(task)
        task.add_done_callback(run_finished)
        return sse(deps(request.session_id).listen(serialize=False))

    @app.get("/chat/{session_id}/events")
    async def events(
        session_id: str, last_event_id: str | None = Header(default=None), wait: int = Query(default=3, ge=0, le=60)
    ) -> Response:
        """The session's events from its run's `begin`, or after the browser's `Last-Event-ID`.

        `wait`: seconds to wait for a session that has no events yet (404 after that).
        """
        listener = deps(session_id).listen(serialize=False, after=last_event_id, wait=wait)
        try:
            first = await anext(listener)  # surfaces a bad or expired cursor as an HTTP error
        except StopAsyncIteration:
            if last_event_id:  # resumed after `end`: 204 tells EventSource to stop reconnecting
                return Response(status_code=204)
            raise HTTPException(404, f"session {session_id!r} has no events") from None
        except CursorExpiredError as e:
            raise HTTPException(410, str(e)) from e
        except (InvalidIdError, CursorAheadError) as e:
            raise HTTPException(422, str(e)) from e

        async def replay() -> AsyncIterator[dict[str, Any] | str]:
            yield first
            async for event in listener:
                yield event

        return sse(replay())

    @app.post("/chat/{session_id}/cancel")
    async def cancel(session_id: str) -> dict[str, bool]:
        """Cancel the session's live run, wherever it runs."""
        return {"cancelled": await deps(session_id).cancel()}

    @app.get("/chat/{session_id}/history")
    async def history(session_id: str) -> list[dict[str, Any]]:
        """The stored conversation, shaped like the live events."""
        deps(session_id)
        session = RedisSession(redis=redis, scope_id=SCOPE_ID, user_id=USER_ID, session_id=session_id)
        await session.load()
        return Session.nodes_from_msgs(session.msgs)

    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with redis_client(ServerSettings()) as redis:  # `REDIS_URL`'s, else an embedded Redis
        app.mount("/", create_app(redis))
        yield


app = FastAPI(lifespan=_lifespan)
"""For `uvicorn examples.fastapi_sse:app`: the chat app on `REDIS_URL`, else on an embedded Redis."""
