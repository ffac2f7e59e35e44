"""Test doubles that are real: deps and sessions as users write them, models that stream on cue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from redis.asyncio import Redis

from pydantic_ai_stream import Deps, Runtime, Session, SessionKeys, Settings
from pydantic_ai_stream.server import RunningServer

Event = dict[str, Any]

SLOW_RENEWAL = 20.0
"""Seconds between lease renewals in the tests of cancel latency, so that a cancel that stopped its run within
`CANCEL_WITHIN` came through Pub/Sub, not with a renewal (with renewals every 0.3 s and 0.2 s to stop, a test
failed on a busy machine, and would have passed two times in three with no Pub/Sub at all)."""
CANCEL_WITHIN = 1.0
"""Seconds a cancel from any process takes to stop a run and reach its listeners: a few ms on an idle machine,
a few hundred on a busy one."""


def renew_slowly(settings: Settings) -> None:
    """Leases renewed every `SLOW_RENEWAL` seconds (and living three times that)."""
    settings.lease_ttl, settings.lease_renew_interval = 3 * SLOW_RENEWAL, SLOW_RENEWAL


@dataclass(kw_only=True)
class ScopedDeps(Deps):
    scope_id: int = 1

    @classmethod
    def on(cls, runtime: Runtime, *, user_id: int, session_id: str, run_id: str | None = None) -> ScopedDeps:
        """Deps of a session in scope 1 on `runtime`: its Redis client, its settings."""
        return cls(redis=runtime.redis, runtime=runtime, user_id=user_id, session_id=session_id, run_id=run_id)

    def get_scope_id(self) -> int:
        return self.scope_id


@dataclass(kw_only=True)
class MemorySession(Session):
    """A session kept in a dict shared by the test, so a reload sees what the run saved."""

    session_id: str
    store: dict[str, list[ModelMessage]] = field(default_factory=dict)
    saves: int = 0

    async def load(self) -> None:
        self.msgs = list(self.store.get(self.session_id, []))

    async def save(self) -> None:
        self.saves += 1
        self.store[self.session_id] = list(self.msgs)


def _answered_tools(messages: list[ModelMessage]) -> int:
    return sum(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)


def turn(prompt: str, answer: str) -> list[ModelMessage]:
    """A user's prompt and the model's text answer."""
    return [ModelRequest.user_text_prompt(prompt), ModelResponse(parts=[TextPart(answer)])]


def texts(messages: list[ModelMessage]) -> list[str]:
    """What each part of `messages` says, in order."""
    return [str(getattr(part, "content", "")) for message in messages for part in message.parts]


def scripted_model(
    *,
    tokens: list[str],
    gate: asyncio.Event | None = None,
    stall: bool = False,
    tool: str | None = None,
    tool_args: str = "{}",
) -> FunctionModel:
    """Streams a call to `tool` first (if given, args in two pieces), then `tokens`, then waits on `gate`.

    `stall` waits forever instead (on an event of the run's own loop).
    """

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        if tool is not None and _answered_tools(messages) == 0:
            half = len(tool_args) // 2
            yield {0: DeltaToolCall(name=tool, json_args=tool_args[:half], tool_call_id="call-1")}
            yield {0: DeltaToolCall(json_args=tool_args[half:])}
            return
        for token in tokens:
            yield token
        if gate is not None:
            await gate.wait()
        if stall:
            await asyncio.Event().wait()

    return FunctionModel(stream_function=stream)


class Collector:
    """Listens to a session in a task; tests wait on what it has seen, with deadlines."""

    def __init__(self, deps: Deps, **listen: Any) -> None:
        self.events: list[Event] = []
        self.ended = False
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._run(deps, listen))

    async def _run(self, deps: Deps, listen: dict[str, Any]) -> list[Event]:
        try:
            async for event in deps.listen(serialize=False, **listen):
                assert isinstance(event, dict)
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            self.ended = True
            async with self._changed:
                self._changed.notify_all()
        return self.events

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        """The first event matching `predicate`, waiting for it up to `timeout` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.ended:
                    raise AssertionError(f"listener ended without a matching event: {self.events}")
                await self._changed.wait()

    async def done(self, timeout: float = 5.0) -> list[Event]:
        """All events, once the listener has ended."""
        return await asyncio.wait_for(self.task, timeout)


def bodies(events: list[Event], **match: Any) -> list[dict[str, Any]]:
    """Bodies of `event` entries whose body has every `match` item."""
    return [e["body"] for e in events if e["type"] == "event" and all(e["body"].get(k) == v for k, v in match.items())]


def has_text(text: str) -> Callable[[Event], bool]:
    """Matches the text event (start or delta) that carries `text`."""
    return lambda e: text in (e["body"].get("content"), e["body"].get("content_delta"))


def text_of(events: list[Event]) -> str:
    return "".join(b.get("content", "") + b.get("content_delta", "") for b in bodies(events, part_kind="text"))


async def evalsha_calls(redis: Redis) -> int:
    """Script calls Redis has run so far (our write round trips, renewals, checks)."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def listened_run(runtime: Runtime, session_id: str = "s1") -> tuple[ScopedDeps, Collector]:
    """A run started on user 1's session `session_id` (its `begin` written), and a listener that has seen it."""
    owner = ScopedDeps.on(runtime, user_id=1, session_id=session_id)
    await owner.start()
    await owner.flush()
    listener = Collector(ScopedDeps.on(runtime, user_id=1, session_id=session_id))
    await listener.wait_for(lambda e: e["type"] == "begin")
    return owner, listener


async def wait_renewed(redis: Redis, key: str, *, past: float) -> None:
    """Watch the lease at `key` until `past` seconds after it would have expired unrenewed; fail if it lapses."""
    end = time.monotonic() + max(0, await redis.pttl(key)) / 1000 + past
    while time.monotonic() < end:
        assert await redis.exists(key), f"the lease {key} lapsed"
        await asyncio.sleep(0.01)


def server_keys(server: RunningServer, session_id: str) -> SessionKeys:
    """The keys of user 1's session `session_id` (scope 1) on a running gRPC server."""
    return server.servicer.runtime.keys(scope_id=1, user_id=1, session_id=session_id)


async def status_of(call: Awaitable[object]) -> grpc.StatusCode:
    """The status a gRPC call (or anything awaiting one) ends with: OK, or its error's code."""
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


class GatedModel:
    """A model that counts its calls and how many stream at once, and finishes when `gate` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0
        self.streaming = 0
        self.most = 0
        self.started = asyncio.Condition()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        async with self.started:
            self.calls += 1
            self.streaming += 1
            self.most = max(self.most, self.streaming)
            self.started.notify_all()
        try:
            yield "hello "
            await self.gate.wait()
            yield "world"
        finally:
            self.streaming -= 1

    async def wait_calls(self, n: int) -> None:
        async with asyncio.timeout(5), self.started:
            await self.started.wait_for(lambda: self.calls >= n)

    def agent(self) -> Agent[Any, str]:
        return Agent(FunctionModel(stream_function=self.stream))
