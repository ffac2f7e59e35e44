"""Agents the gRPC tests host by import path (`grpc_agents:<name>`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from support import scripted_model

# Streams two tokens, then waits forever: a run that is live until cancelled.
stalling = Agent(scripted_model(tokens=["thinking ", "hard "], stall=True), name="stalling")

# A tool call with args in pieces, its return, then a streamed answer.
weather = Agent(scripted_model(tokens=["It is ", "sunny."], tool="get_weather", tool_args='{"city": "Paris"}'))


@weather.tool_plain
def get_weather(city: str) -> str:
    return f"sunny in {city}"


# Its tool asks the model to retry: a tool return with outcome "retried".
picky = Agent(scripted_model(tokens=["Which ", "city?"], tool="get_weather", tool_args='{"city": "?"}'))


@picky.tool_plain(name="get_weather")
def get_weather_picky(city: str) -> str:
    raise ModelRetry(f"no such city: {city}")


async def _paced(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for i in range(PACED_TOKENS):
        await asyncio.sleep(0.05)  # the model's pace: a run lasts about two seconds
        yield f"t{i} "


PACED_TOKENS = 40
# Streams forty tokens, one every 50 ms: long enough to kill or pause its worker mid-answer.
paced = Agent(FunctionModel(stream_function=_paced), name="paced")
