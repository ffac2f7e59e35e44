"""Agents the chat page's browser tests host (`page_agents:<name>`): slow enough that a reload or a Stop lands
mid-answer, with thinking, and a tool that needs approval."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)
from pydantic_ai.tools import DeferredToolRequests

TOKENS = 40
THOUGHT = "The user wants words; I will stream them slowly."


def answer() -> str:
    """The whole text `slow` answers."""
    return "".join(f"w{i} " for i in range(TOKENS))


def _pace() -> float:
    return float(os.environ.get("PAGE_PACE_SECONDS", "0.1"))


async def _slow(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaThinkingCalls]:
    yield {0: DeltaThinkingPart(content=THOUGHT)}
    for i in range(TOKENS):
        await asyncio.sleep(_pace())  # the model's pace: the answer takes seconds
        yield f"w{i} "


# Thinks, then streams forty words, one every $PAGE_PACE_SECONDS (0.1 s).
slow = Agent(FunctionModel(stream_function=_slow), name="slow")


async def _deployer(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls | DeltaThinkingCalls]:
    returns = [p for p in messages[-1].parts if p.part_kind in ("tool-return", "retry-prompt")]
    if returns:
        yield "Done: " + "; ".join(str(p.content) for p in returns) + "."
        for i in range(TOKENS // 2):
            await asyncio.sleep(_pace())  # a continuation that takes seconds: a tab can open mid-way
            yield f" d{i}"
        return
    yield {0: DeltaThinkingPart(content="Deploying needs a human's yes.")}
    yield {1: DeltaToolCall(name="deploy", json_args='{"env": "production"}', tool_call_id="d1")}


def deployed() -> str:
    """The whole text `deployer` answers once its call is approved."""
    return "Done: deployed to production." + "".join(f" d{i}" for i in range(TOKENS // 2))


# Asks to deploy (a tool that needs approval), then says what came back, and twenty more words, paced.
deployer: Agent[None, str | DeferredToolRequests] = Agent(
    FunctionModel(stream_function=_deployer), output_type=[str, DeferredToolRequests], name="deployer"
)


@deployer.tool_plain(requires_approval=True)
def deploy(env: str) -> str:
    return f"deployed to {env}"
