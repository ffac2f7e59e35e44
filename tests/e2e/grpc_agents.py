"""Agents the gRPC tests host by import path (`grpc_agents:<name>`)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.exceptions import CallDeferred
from pydantic_ai.messages import BinaryContent, FileUrl, ModelMessage, ModelRequest, ModelResponse, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.tools import DeferredToolRequests

from pydantic_ai_stream import RETRY_SAFE
from pydantic_ai_stream.server import HostedDeps
from support import scripted_model

# Streams two tokens, then waits forever: a run that is live until cancelled.
stalling = Agent(scripted_model(tokens=["thinking ", "hard "], stall=True), name="stalling")

# A tool call with args in pieces, its return, then a streamed answer.
weather = Agent(scripted_model(tokens=["It is ", "sunny."], tool="get_weather", tool_args='{"city": "Paris"}'))


@weather.tool_plain
def get_weather(city: str) -> str:
    return f"sunny in {city}"


async def _echo(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    prompt = next(
        part.content
        for message in reversed(messages)
        for part in message.parts
        if isinstance(part, UserPromptPart) and isinstance(part.content, str)
    )
    first, *rest = prompt.split(" ")
    yield first
    for word in rest:
        yield " " + word


# Streams the prompt back at once, a word a token: its text is the prompt, in as many events as it has words
# (a finished run a late listener is far behind on).
echo = Agent(FunctionModel(stream_function=_echo), name="echo")


# Its tool asks the model to retry: a tool return with outcome "retried".
picky = Agent(scripted_model(tokens=["Which ", "city?"], tool="get_weather", tool_args='{"city": "?"}'))


@picky.tool_plain(name="get_weather")
def get_weather_picky(city: str) -> str:
    raise ModelRetry(f"no such city: {city}")


async def _paced(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    pace = float(os.environ.get("TEST_PACE_SECONDS", "0.05"))
    for i in range(PACED_TOKENS):
        await asyncio.sleep(pace)  # the model's pace: a run lasts about two seconds
        yield f"t{i} "


PACED_TOKENS = 40
# Streams forty tokens, one every 50 ms: long enough to kill or pause its worker mid-answer.
paced = Agent(FunctionModel(stream_function=_paced), name="paced")


# Two nodes: a text part and two tool calls, `book` (not safe to retry) and `lookup` (safe to retry); then
# forty paced tokens. The tools count their calls in files under $TEST_TOOL_MARKS (across processes);
# while a file `hang-lookup` is there, the first `lookup` hangs: its worker can be killed mid-tool-call;
# while a file `hold-answer` is there, the second node waits before its tokens: its runs stay in flight.
STEPS_TEXT = "Checking. "


def _marks() -> Path:
    return Path(os.environ["TEST_TOOL_MARKS"])


def tool_calls(name: str) -> int:
    """How many times the `steps` agent's tool `name` was called."""
    return len(list(_marks().glob(f"{name}.*")))


def _mark(name: str) -> int:
    n = tool_calls(name) + 1
    (_marks() / f"{name}.{n}").touch()
    return n


async def _steps(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    if not any(isinstance(m, ModelResponse) for m in messages):
        yield STEPS_TEXT
        yield {
            0: DeltaToolCall(name="book", json_args='{"what": "table"}', tool_call_id="book-1"),
            1: DeltaToolCall(name="lookup", json_args='{"what": "menu"}', tool_call_id="lookup-1"),
        }
        return
    held_until = time.monotonic() + 120
    while (_marks() / "hold-answer").exists():
        assert time.monotonic() < held_until, "the test never let the answers go"
        await asyncio.sleep(0.01)  # polling a file: what the test process does shows only there
    async for token in _paced(messages, info):
        yield token


steps = Agent(FunctionModel(stream_function=_steps), name="steps")


def _tool_seconds() -> float:
    return float(os.environ.get("TEST_TOOL_SECONDS", "0"))


@steps.tool_plain
def book(what: str) -> str:
    _mark("book")
    time.sleep(_tool_seconds())  # a tool's work (in a thread: the tool is sync)
    return f"booked a {what}"


@steps.tool_plain(metadata={RETRY_SAFE: True})
async def lookup(what: str) -> str:
    if _mark("lookup") == 1 and (_marks() / "hang-lookup").exists():
        await asyncio.sleep(60)  # its worker is killed meanwhile
    await asyncio.sleep(_tool_seconds())  # a tool's work
    return f"{what}: soup"


# `steps` for a session with earlier turns: it goes by the messages after the last user prompt, and writes what
# each model request sends (its process, and what each part says) to a file `input.<n>` under $TEST_TOOL_MARKS.
def model_inputs() -> list[dict[str, Any]]:
    """What each model request of `recalling` sent, in order: `{"pid": ..., "said": [...]}`."""
    files = sorted(_marks().glob("input.*"), key=lambda path: int(path.suffix[1:]))
    return [json.loads(path.read_text()) for path in files]


async def _recalling(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    said = [str(getattr(part, "content", getattr(part, "tool_name", ""))) for m in messages for part in m.parts]
    n = _mark("input")
    (_marks() / f"input.{n}").write_text(json.dumps({"pid": os.getpid(), "said": said}))
    prompts = [i for i, m in enumerate(messages) if any(isinstance(p, UserPromptPart) for p in m.parts)]
    async for item in _steps(messages[prompts[-1] :] if prompts else messages, info):
        yield item


recalling = Agent(FunctionModel(stream_function=_recalling), name="recalling")
recalling.tool_plain(book)
recalling.tool_plain(metadata={RETRY_SAFE: True})(lookup)


class Account(BaseModel):
    """The request context the `seeing` agent declares."""

    locale: str
    account: int


def _seen(messages: list[ModelMessage], info: AgentInfo) -> list[str]:
    """What the model got: the instructions, then each part of the last user prompt (text, media type, size, URL)."""
    seen = [f"instructions={info.instructions}"]
    prompt = [
        part for m in messages if isinstance(m, ModelRequest) for part in m.parts if isinstance(part, UserPromptPart)
    ][-1]
    for item in [prompt.content] if isinstance(prompt.content, str) else prompt.content:
        if isinstance(item, str):
            seen.append(f"text={item}")
        elif isinstance(item, BinaryContent):
            seen.append(f"binary={item.media_type}:{len(item.data)}:{item.identifier}")
        elif isinstance(item, FileUrl):
            seen.append(f"{item.kind}={item.media_type}:{item.url}")
    return seen


async def _seeing(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    pace = float(os.environ.get("TEST_PACE_SECONDS", "0"))
    for line in _seen(messages, info):
        yield line + "\n"
    for i in range(SEEING_TOKENS):
        if pace:
            await asyncio.sleep(pace)  # the model's pace: its worker can be killed mid-answer
        yield f"t{i} "


SEEING_TOKENS = 20
# Says what it saw (its instructions, which read the run's context, and its prompt's parts), then twenty tokens
# (paced by $TEST_PACE_SECONDS).
seeing = Agent(FunctionModel(stream_function=_seeing), deps_type=HostedDeps[Account], name="seeing")


@seeing.instructions
def _account(ctx: RunContext[HostedDeps[Account]]) -> str:
    return f"locale {ctx.deps.context.locale}, account {ctx.deps.context.account}"


# The same, with a context of any shape (a dict).
seeing_any = Agent(FunctionModel(stream_function=_seeing), deps_type=HostedDeps, name="seeing_any")


@seeing_any.instructions
def _context(ctx: RunContext[HostedDeps]) -> str:
    return f"context {json.dumps(ctx.deps.context, sort_keys=True)}"


# Asks to drop a database (a tool that requires approval) and to page someone (an external tool), then answers
# with what came back: a run that waits for input. `OPS_DROPS` counts the drops, which must happen at most once.
OPS_DROPS: list[str] = []


async def _ops(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    returns = [p for p in messages[-1].parts if p.part_kind in ("tool-return", "retry-prompt")]
    if returns:
        yield "done: " + "; ".join(f"{p.tool_name}={p.content}" for p in returns)
        return
    yield {0: DeltaToolCall(name="drop_db", json_args='{"name": "staging"}', tool_call_id="c1")}
    yield {1: DeltaToolCall(name="page", json_args='{"msg": "db"}', tool_call_id="c2")}


ops: Agent[None, str | DeferredToolRequests] = Agent(
    FunctionModel(stream_function=_ops), output_type=[str, DeferredToolRequests], name="ops"
)


@ops.tool_plain(requires_approval=True)
def drop_db(name: str) -> str:
    OPS_DROPS.append(name)
    return f"dropped {name}"


@ops.tool_plain
def page(msg: str) -> str:
    raise CallDeferred


async def _oncall(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    returns = [p for p in messages[-1].parts if p.part_kind in ("tool-return", "retry-prompt")]
    if returns:
        yield "paged: " + "; ".join(f"{p.tool_name}={p.content}" for p in returns)
        return
    yield {0: DeltaToolCall(name="page", json_args='{"msg": "db down"}', tool_call_id="p1")}


# Pages someone through an external tool (a service in another language runs it and answers), then says what came
# back: a run that waits for one external result (the clients' external-tool example).
oncall: Agent[None, str | DeferredToolRequests] = Agent(
    FunctionModel(stream_function=_oncall), output_type=[str, DeferredToolRequests], name="oncall"
)


@oncall.tool_plain(name="page")
def page_oncall(msg: str) -> str:
    raise CallDeferred


# `ops` for worker processes that are killed around a wait: `drop_db` (an approval, not safe to retry) and `restart`
# (an approval, safe to retry) count their calls in files under $TEST_TOOL_MARKS and run one after the other; while
# a file `hang-<tool>` is there, that tool's first call hangs once counted (its worker is killed meanwhile). `page`
# is external. The answer after the returns says what came back, once a file `hold-answer` is gone.
async def _guarded(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    returns = [p for p in messages[-1].parts if p.part_kind in ("tool-return", "retry-prompt")]
    if not returns:
        yield {0: DeltaToolCall(name="drop_db", json_args='{"name": "staging"}', tool_call_id="c1")}
        yield {1: DeltaToolCall(name="restart", json_args='{"name": "api"}', tool_call_id="c2")}
        yield {2: DeltaToolCall(name="page", json_args='{"msg": "db"}', tool_call_id="c3")}
        return
    yield "done: "
    held_until = time.monotonic() + 120
    while (_marks() / "hold-answer").exists():
        assert time.monotonic() < held_until, "the test never let the answer go"
        await asyncio.sleep(0.01)  # polling a file: what the test process does shows only there
    yield "; ".join(f"{p.tool_name}={p.content}" for p in returns)


guarded: Agent[None, str | DeferredToolRequests] = Agent(
    FunctionModel(stream_function=_guarded), output_type=[str, DeferredToolRequests], name="guarded"
)


async def _hang_once(tool: str) -> None:
    if _mark(tool) == 1 and (_marks() / f"hang-{tool}").exists():
        await asyncio.sleep(60)  # its worker is killed meanwhile


@guarded.tool_plain(name="drop_db", requires_approval=True, sequential=True)
async def drop_db_guarded(name: str) -> str:
    await _hang_once("drop_db")
    return f"dropped {name}"


@guarded.tool_plain(requires_approval=True, sequential=True, metadata={RETRY_SAFE: True})
async def restart(name: str) -> str:
    await _hang_once("restart")
    return f"restarted {name}"


@guarded.tool_plain(name="page")
def page_guarded(msg: str) -> str:
    raise CallDeferred
