"""The web edge's routes on the HTTP port (see `__init__`): each request authenticated and admitted as gRPC's are,
runs started and answered through admission and `SessionHandle.respond`, streams read from Redis and encoded
by `encode.chunks`. Nothing is kept in process memory: any replica serves any request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.ui.ag_ui import AGUIAdapter
from pydantic_ai.ui.vercel_ai import VercelAIAdapter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..._core import errors
from ..._core.cursor import Cursor
from ..._core.deferred import InputCall
from ..._core.entry import Entry
from ..._core.names import BEGIN, END, EVENT, INPUT_REQUIRED
from ..._durable.fleet import fleet_agents
from ..._read.handle import SessionHandle
from ..._runtime.auth import AuthError, Caller
from ..._runtime.deps import HostedDeps
from ..._store.results import CancelState
from ..._store.sessions import RedisSession, Session
from ..._store.stream import SessionStream
from ..grpc.servicer import AgentStreamServicer
from .encode import AGUI, VERCEL_AI, Chunk, WebProtocol, chunks
from .events import WebCursor
from .turns import Turn, agui_request, agui_turn, vercel_request, vercel_turn

__all__ = ["WebEdge"]

_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthError, 401),
    (errors.UnknownAgentError, 404),
    (errors.AgentNotAllowedError, 403),
    (errors.InvalidIdError, 400),
    (errors.InvalidRequestError, 400),
    (errors.ShuttingDownError, 503),
    (errors.SessionBusyError, 409),
    (errors.QueueFullError, 429),
    (errors.RunNotFoundError, 404),
    (errors.NotWaitingError, 409),
    (errors.CursorExpiredError, 410),
    (errors.CursorAheadError, 416),
    (errors.StreamNotFoundError, 404),
    (RedisConnectionError, 503),
    (RedisTimeoutError, 503),
)
_BACK_PAGE = 1_000
"""Entries the first page of a look back through a run's stream reads (each next one twice as many, up to
`_BACK_PAGE_MOST`)."""
_BACK_PAGE_MOST = 16_000


def _answering(handler: Callable[[Any, Request], Awaitable[Response]]) -> Callable[[Any, Request], Awaitable[Response]]:
    """The library's errors as the HTTP statuses that mean the same, with a JSON `{"error": ...}` body."""

    async def answer(self: Any, request: Request) -> Response:
        try:
            return await handler(self, request)
        except Exception as e:
            status = next((code for error_type, code in _STATUS if isinstance(e, error_type)), None)
            if status is None:
                raise
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"error": str(e)}, status_code=status, headers=headers)

    return answer


@dataclass(kw_only=True)
class _Run:
    """The session's run as its stream has it: its `begin` and its last entry, read at once, and, read only when
    asked, where its current segment starts (a look back through the stream: a run that ended or waits needs it
    only for a reconnect without a cursor, and a page's history asks none of it)."""

    stream: SessionStream
    begin: Entry
    last: Entry
    _segment: tuple[Entry | None] | None = None
    """The last `input_required` before `last` (`(None,)`: none), once looked up."""

    @property
    def run_id(self) -> str:
        return str(self.begin.body.get("run_id") or "")

    @property
    def waiting(self) -> Entry | None:
        """The `input_required` the run stopped at, if it waits now."""
        return self.last if _is_wait(self.last) else None

    @property
    def calls(self) -> list[InputCall]:
        """The calls the run waits on (none unless it waits)."""
        return list(self.waiting.body.get("calls") or []) if self.waiting is not None else []

    async def segment_start(self) -> Entry | None:
        """The `input_required` the run's current segment continues after (`None`: it runs from its `begin`): the
        last one before its last entry, looked for backwards from there."""
        if self._segment is None:
            found, before, count = None, self.last.id, _BACK_PAGE
            while found is None and before != self.begin.id:
                page = await self.stream.read_back(before=before, count=count)
                found = next((entry for entry in page if _is_wait(entry)), None)
                if len(page) < count:  # the oldest entry reached (a trim may have taken the `begin` meanwhile)
                    break
                before, count = page[-1].id, min(2 * count, _BACK_PAGE_MOST)
            self._segment = (found,)
        return self._segment[0]

    async def current(self) -> WebCursor:
        """Where its current segment starts: its `begin`, or after the `input_required` its continuation follows."""
        start = await self.segment_start()
        return WebCursor(Cursor(start.id)) if start is not None else WebCursor(Cursor.BEGIN)

    async def live_prompt(self) -> str | None:
        """The prompt of a run in its first part (it started, has not ended nor waited): the conversation store
        holds it only once the run ends or waits, so a page opened meanwhile shows it from here."""
        prompt = self.begin.body.get("user_prompt")
        if not isinstance(prompt, str) or self.last.type == END or self.waiting is not None:
            return None
        return prompt if await self.segment_start() is None else None

    async def resumable(self) -> str | None:
        """The cursor a client that shows the stored conversation resumes from: after what the conversation holds
        (`None`: the run ended, the conversation holds it all)."""
        if self.last.type == END:
            return None
        if self.waiting is not None:
            return self.waiting.id
        start = await self.segment_start()
        return start.id if start is not None else "0"


def _is_wait(entry: Entry) -> bool:
    return entry.type == EVENT and entry.body.get("event") == INPUT_REQUIRED


@dataclass(kw_only=True)
class WebEdge:
    """Vercel AI and AG-UI on the HTTP port, for `servicer`'s agents and callers."""

    servicer: AgentStreamServicer
    sessions: Callable[[HostedDeps[Any]], Session] = RedisSession.of
    """Where conversations are kept (the server's `--sessions`: Redis, or PostgreSQL), as the workers read them."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server stops: open event streams end cleanly, and their clients resume on another replica."""

    def routes(self) -> list[BaseRoute]:
        """The routes of the contract (docs: README "HTTP: Vercel AI and AG-UI")."""
        return [
            Route("/v1/agents", self.agents, methods=["GET"]),
            Route("/v1/agents/{agent}/vercel-ai/chat", self.vercel_chat, methods=["POST"]),
            Route("/v1/agents/{agent}/vercel-ai/chat/{session}/stream", self.vercel_stream, methods=["GET"]),
            Route("/v1/agents/{agent}/ag-ui", self.agui_run, methods=["POST"]),
            Route("/v1/agents/{agent}/ag-ui/{session}/stream", self.agui_stream, methods=["GET"]),
            Route("/v1/agents/{agent}/sessions/{session}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/agents/{agent}/sessions/{session}/messages", self.messages, methods=["GET"]),
            Route("/v1/agents/{agent}/sessions/{session}/pending", self.pending, methods=["GET"]),
        ]

    @_answering
    async def agents(self, request: Request) -> Response:
        caller = await self._caller(request)
        names = {*self.servicer.agents, *await fleet_agents(self.servicer.runtime)}
        return JSONResponse({"agents": [{"name": name} for name in sorted(names) if caller.may_run(name)]})

    @_answering
    async def vercel_chat(self, request: Request) -> Response:
        caller, agent = await self._agent(request)
        body = vercel_request(await request.body())
        session = self.servicer.admission.session(caller, body.id)
        answers = bool(body.messages) and body.messages[-1].role == "assistant"
        run = await _run(session) if answers else None  # a new prompt needs no look at the run before
        return await self._turn(caller, agent, vercel_turn(body, run.calls if run else []), run, VERCEL_AI)

    @_answering
    async def agui_run(self, request: Request) -> Response:
        caller, agent = await self._agent(request)
        body = agui_request(await request.body())
        session = self.servicer.admission.session(caller, body.thread_id)
        run = await _run(session)
        return await self._turn(caller, agent, agui_turn(body, run.calls if run else []), run, AGUI)

    @_answering
    async def vercel_stream(self, request: Request) -> Response:
        return await self._resume(request, VERCEL_AI)

    @_answering
    async def agui_stream(self, request: Request) -> Response:
        return await self._resume(request, AGUI)

    @_answering
    async def cancel(self, request: Request) -> Response:
        caller, session = await self._session(request)
        allowed = await self.servicer.admission.run_of_allowed_agent(caller, session)
        state = await session.cancel_run(run_id=allowed)
        return JSONResponse({"cancelled": state is not CancelState.NONE})

    @_answering
    async def messages(self, request: Request) -> Response:
        """The stored conversation as the protocol's messages, `active` (where to resume the session's run from,
        if it is live or waits) and `pending` (the calls it waits on)."""
        caller, session = await self._session(request)
        await self.servicer.admission.run_of_allowed_agent(caller, session)
        form = request.query_params.get("format", "vercel-ai")
        if form not in ("vercel-ai", "ag-ui"):
            raise errors.InvalidRequestError("format must be 'vercel-ai' or 'ag-ui'")
        runtime = self.servicer.runtime
        owner: HostedDeps[Any] = HostedDeps(
            redis=runtime.redis,
            runtime=runtime,
            scope_id=caller.scope_id,
            user_id=caller.user_id,
            session_id=session.keys.session_id,
        )
        stored = self.sessions(owner)
        await stored.load()
        dumped: list[Any] = (
            VercelAIAdapter.dump_messages(stored.msgs, sdk_version=6)
            if form == "vercel-ai"
            else AGUIAdapter.dump_messages(stored.msgs)
        )
        run = await _run(session)
        messages = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in dumped]
        if run is not None and (prompt := await run.live_prompt()) is not None:
            message_id = f"{run.run_id}-prompt"
            messages.append(
                {"id": message_id, "role": "user", "parts": [{"type": "text", "text": prompt}]}
                if form == "vercel-ai"
                else {"id": message_id, "role": "user", "content": prompt}
            )
        return JSONResponse(
            {
                "messages": messages,
                "active": await run.resumable() if run is not None else None,
                "pending": run.calls if run is not None else [],
            }
        )

    @_answering
    async def pending(self, request: Request) -> Response:
        caller, session = await self._session(request)
        await self.servicer.admission.run_of_allowed_agent(caller, session)
        run = await _run(session)
        waiting = run.waiting if run is not None else None
        return JSONResponse({"run_id": run.run_id if waiting and run else None, "calls": run.calls if run else []})

    async def _turn(self, caller: Caller, agent: str, turn: Turn, run: _Run | None, protocol: WebProtocol) -> Response:
        """Start the turn's run, or answer the waiting run with it; the run's chunks from there."""
        admission = self.servicer.admission
        if turn.answers is not None:
            session = admission.session(caller, turn.session_id)
            if run is None or run.waiting is None:
                raise errors.NotWaitingError(f"session {turn.session_id!r} has no run waiting for answers")
            allowed = await admission.run_of_allowed_agent(caller, session)
            if allowed is not None and allowed != run.run_id:
                raise errors.AgentNotAllowedError("the session's run is of an agent you may not run")
            await session.respond(run.run_id, turn.answers)
            return await self._sse(session, protocol, WebCursor(Cursor(run.waiting.id)))
        session = await admission.admit(
            caller, agent=agent, prompt=turn.prompt, session_id=turn.session_id, anywhere=True
        )
        _, attachments = admission.check_inputs(agent=agent, context=None, attachments=turn.attachments)
        with contextlib.suppress(errors.RunExistsError):  # a retried request: the run it started, from its `begin`
            await admission.submit(
                session, agent=agent, prompt=turn.prompt, run_id=turn.run_id, attachments=attachments
            )
        return await self._sse(session, protocol, WebCursor(Cursor.BEGIN))

    async def _resume(self, request: Request, protocol: WebProtocol) -> Response:
        """A reconnect: after `Last-Event-ID` (or `?after=`), or the current segment of the session's run."""
        caller, session = await self._session(request)
        await self.servicer.admission.run_of_allowed_agent(caller, session)
        value = request.headers.get("last-event-id") or request.query_params.get("after")
        if value:
            after = WebCursor.parse(value)
        else:
            run = await _run(session)
            if run is None:
                return Response(status_code=204)
            after = await run.current()
        return await self._sse(session, protocol, after)

    async def _sse(self, session: SessionHandle, protocol: WebProtocol, after: WebCursor) -> Response:
        """The run's chunks after `after` as server-sent events (a heartbeat comment in silences); a cursor
        outside the stream is refused here, before the response starts."""
        bounds = await session.stream.bounds()
        if bounds is None:
            raise errors.StreamNotFoundError(f"session {session.keys.session_id!r} has no run")
        after.entry.check(bounds)

        async def events() -> AsyncIterator[dict[str, str]]:
            entries = _entries(session)
            async with contextlib.aclosing(entries):
                sent = chunks(entries, protocol, session_id=session.keys.session_id, after=after)
                async with contextlib.aclosing(sent):  # type: ignore[type-var]
                    async for chunk in _until(sent, self.stopping):
                        yield {"id": chunk.id, "data": chunk.data}

        interval = self.servicer.heartbeat_interval
        return EventSourceResponse(events(), ping=interval, sep="\n", headers=protocol.headers)

    async def _caller(self, request: Request) -> Caller:
        return await self.servicer.admission.authenticate(request.headers.getlist("authorization"))

    async def _agent(self, request: Request) -> tuple[Caller, str]:
        caller = await self._caller(request)
        agent = request.path_params["agent"]
        also = frozenset() if agent in self.servicer.agents else await fleet_agents(self.servicer.runtime)
        self.servicer.admission.check_agent(caller, agent, also=also)
        return caller, agent

    async def _session(self, request: Request) -> tuple[Caller, SessionHandle]:
        caller, _ = await self._agent(request)
        return caller, self.servicer.admission.session(caller, request.path_params["session"])


async def _until(chunks: AsyncIterator[Chunk], stopping: asyncio.Event) -> AsyncIterator[Chunk]:
    """`chunks` until they end or `stopping` is set (the server stops: the response ends rather than being cut)."""
    stopped = asyncio.ensure_future(stopping.wait())
    following: asyncio.Future[Chunk] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(chunks))
            await asyncio.wait((following, stopped), return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                return
            try:
                chunk = following.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        stopped.cancel()
        if following is not None and not following.done():  # stopped, or the client went away
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following


async def _entries(session: SessionHandle) -> AsyncGenerator[Entry]:
    """The session's run from its `begin` until its `end` (heartbeats left out: the response pings itself)."""
    listened = session.listen_entries(wait=3, timeout=None, after=None)
    try:
        async for entry in listened:
            if entry is not None:
                yield entry
    finally:
        await listened.aclose()  # type: ignore[attr-defined]


async def _run(session: SessionHandle) -> _Run | None:
    """The session's run as its stream has it now; `None` if there is none (never ran, or expired, or its `begin`
    trimmed away: too old to resume)."""
    ends = await session.stream.ends()
    if ends is None or ends[0].type != BEGIN:
        return None
    return _Run(stream=session.stream, begin=ends[0], last=ends[1])
