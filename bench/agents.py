"""The agent our gRPC server hosts for the benchmarks (`--agent paced=bench.agents:paced`).

The same paced model as the worker's: the prompt (`Pace(...).prompt()`) says how many timestamp tokens
to stream, how far apart, and whether to hang afterwards.
"""

from __future__ import annotations

from pydantic_ai import Agent

from bench.worker import paced_model

paced = Agent(paced_model())
