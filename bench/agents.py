"""The agents our gRPC server hosts for the benchmarks (`--agent paced=bench.agents:paced --agent ok=bench.agents:ok`).

`paced`: the worker's paced model: the prompt (`Pace(...).prompt()`) says how many timestamp tokens to
stream, how far apart, and whether to hang afterwards (or stream on until a file exists). `ok`: answers
"ok" to any prompt (big prompts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from bench.worker import paced_model


async def _ok(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "ok"


paced = Agent(paced_model())
ok = Agent(FunctionModel(stream_function=_ok))
