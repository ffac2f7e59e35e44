"""Agents the gRPC tests host by import path (`grpc_agents:<name>`)."""

from __future__ import annotations

from pydantic_ai import Agent, ModelRetry

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
