"""The `demo` agent: needs no API key, yet streams like a model (thinks, calls a tool, answers)."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import (
    AgentInfo,
    DeltaThinkingCalls,
    DeltaThinkingPart,
    DeltaToolCall,
    DeltaToolCalls,
    FunctionModel,
)

__all__ = ["agent"]

TOKEN_DELAY = 0.06
"""Seconds between streamed tokens: about an LLM's pace, so a cancel can land mid-answer."""


def _prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart):  # its text: a string, or the first text of its parts
                    content = part.content
                    return content if isinstance(content, str) else next((c for c in content if isinstance(c, str)), "")
    return ""


async def _stream(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls | DeltaThinkingCalls]:
    last = messages[-1]
    returns = [p for p in last.parts if isinstance(p, ToolReturnPart)] if isinstance(last, ModelRequest) else []
    if not returns:
        # First step: think aloud, then ask the tool for the prompt's word count.
        for piece in ("The user said something; ", "let me count its words first."):
            yield {0: DeltaThinkingPart(content=piece)}
            await asyncio.sleep(TOKEN_DELAY)
        yield {1: DeltaToolCall(name="count_words", json_args='{"text": ', tool_call_id="count-1")}
        yield {1: DeltaToolCall(json_args=json.dumps(_prompt(messages)) + "}")}
        return
    reply = f"You said {returns[0].content} words at {datetime.datetime.now(datetime.UTC):%H:%M:%S} UTC. "
    reply += "This reply streams one word at a time, so you can watch it arrive, resume it, or cancel it."
    for word in reply.split(" "):
        yield word + " "
        await asyncio.sleep(TOKEN_DELAY)


agent = Agent(FunctionModel(stream_function=_stream, model_name="demo"), name="demo")


@agent.tool_plain
def count_words(text: str) -> int:
    """Count the words in `text`."""
    return len(text.split())
