"""The web edge's view of a session's run (`_run`): its `begin` and last entry read at once, where its current
segment starts looked up backwards only when asked, and the same answers as reading the whole stream gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import Runtime, SessionHandle
from pydantic_ai_stream._core.cursor import Cursor
from pydantic_ai_stream._edges.web import routes
from pydantic_ai_stream._edges.web.events import WebCursor
from pydantic_ai_stream._store.stream import SessionStream


@pytest.fixture
def handle(runtime: Runtime) -> SessionHandle:
    return SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="web-run")


@pytest.fixture
def looks_back(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The `before` of every page a look back reads; pages of 4, then 8 entries, so a look back spans pages."""
    monkeypatch.setattr(routes, "_BACK_PAGE", 4)
    monkeypatch.setattr(routes, "_BACK_PAGE_MOST", 8)
    pages: list[str] = []
    read_back = SessionStream.read_back

    async def counted(self: SessionStream, *, before: str, count: int) -> Any:
        pages.append(before)
        return await read_back(self, before=before, count=count)

    monkeypatch.setattr(SessionStream, "read_back", counted)
    return pages


async def _add(redis: Redis, handle: SessionHandle, kind: str, body: dict[str, Any] | None = None) -> str:
    fields = {"type": kind, "origin": "test", "body": json.dumps(body or {})}
    return (await redis.xadd(handle.keys.stream, fields)).decode()  # type: ignore[arg-type]


async def _deltas(redis: Redis, handle: SessionHandle, n: int) -> None:
    for i in range(n):
        await _add(redis, handle, "event", {"event": "part_delta", "idx": 0, "content_delta": f"t{i}"})


async def _wait(redis: Redis, handle: SessionHandle, call: str) -> str:
    return await _add(redis, handle, "event", {"event": "input_required", "calls": [{"tool_call_id": call}]})


async def test_a_running_run_resumes_after_its_last_answered_wait_found_across_pages(
    redis: Redis, handle: SessionHandle, looks_back: list[str]
) -> None:
    await _add(redis, handle, "begin", {"run_id": "r1", "user_prompt": "hi"})
    await _deltas(redis, handle, 3)
    await _wait(redis, handle, "a")
    await _deltas(redis, handle, 10)
    answered = await _wait(redis, handle, "b")
    await _deltas(redis, handle, 13)  # before the last, a page of 4 and one of 8: found on the third page
    run = await routes._run(handle)
    assert run is not None
    assert run.run_id == "r1"
    assert run.waiting is None
    assert run.calls == []
    assert await run.resumable() == answered
    assert await run.current() == WebCursor(Cursor(answered))
    assert await run.live_prompt() is None  # it waited once: the conversation store holds the prompt
    assert len(looks_back) == 3  # looked up once, kept


async def test_a_run_that_never_waited_is_looked_back_to_its_begin(
    redis: Redis, handle: SessionHandle, looks_back: list[str]
) -> None:
    await _add(redis, handle, "begin", {"run_id": "r1", "user_prompt": "hi"})
    await _deltas(redis, handle, 20)
    run = await routes._run(handle)
    assert run is not None
    assert await run.resumable() == "0"
    assert await run.current() == WebCursor(Cursor.BEGIN)
    assert await run.live_prompt() == "hi"
    assert len(looks_back) == 3  # 4 + 8 + 8 entries: the last page ends at the `begin`


async def test_a_waiting_run_answers_from_its_last_entry_and_looks_back_only_for_its_segment(
    redis: Redis, handle: SessionHandle, looks_back: list[str]
) -> None:
    await _add(redis, handle, "begin", {"run_id": "r1", "user_prompt": "hi"})
    first = await _wait(redis, handle, "a")
    await _deltas(redis, handle, 9)
    now = await _wait(redis, handle, "b")
    run = await routes._run(handle)
    assert run is not None
    assert run.waiting is not None
    assert run.waiting.id == now
    assert run.calls == [{"tool_call_id": "b"}]
    assert await run.resumable() == now
    assert await run.live_prompt() is None
    assert looks_back == []  # what a page's history and an answer ask of a waiting run is its last entry
    assert await run.current() == WebCursor(Cursor(first))  # a reconnect without a cursor: after the wait before


async def test_an_ended_run_answers_without_looking_back(
    redis: Redis, handle: SessionHandle, looks_back: list[str]
) -> None:
    await _add(redis, handle, "begin", {"run_id": "r1", "user_prompt": "hi"})
    await _wait(redis, handle, "a")
    await _deltas(redis, handle, 30)
    await _add(redis, handle, "end")
    run = await routes._run(handle)
    assert run is not None
    assert run.waiting is None
    assert run.calls == []
    assert await run.resumable() is None
    assert await run.live_prompt() is None
    assert looks_back == []


async def test_no_run_without_a_stream_or_its_begin(redis: Redis, handle: SessionHandle) -> None:
    assert await routes._run(handle) is None
    await _add(redis, handle, "event", {"event": "part_delta", "idx": 0, "content_delta": "x"})
    assert await routes._run(handle) is None  # its `begin` trimmed away: too old to resume
