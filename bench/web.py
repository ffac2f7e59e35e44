"""The web edge over HTTP against gRPC for the same runs, and how fast a dropped SSE stream resumes (issue 22).

    .venv/bin/python -m bench.web --runs 200 --resumes 500      # --quick: --runs 30 --resumes 60

One process on a private Redis: a server (`running_server`, a worker, `--http-port`) and its clients (gRPC
`StreamClient`, httpx). Time to first token: from sending the request (gRPC `Run` then `Listen`; HTTP one POST of
the AI SDK's chat request) to the first text chunk reaching the client, for `--runs` runs of an agent that answers
at once, one at a time, alternating the two. Resume latency: from a reconnect with `Last-Event-ID` (a chunk picked
at random in a finished run of `LONG_TOKENS` tokens) to its first chunk; the server replays the run from its `begin`
through the encoder and sends what follows the cursor. Clients share the process with the server: both sides pay
the same. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.server import ServerSettings, running_server

from .procs import Procs, private_redis
from .table import percentile


def _agent(tokens: int) -> Agent[None, str]:
    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for i in range(tokens):
            yield f"t{i} "

    return Agent(FunctionModel(stream_function=stream))


LONG_TOKENS = 1000
short = _agent(8)
"""Answers at once: time to first token is the runtime's and the protocol's, not the model's."""
long = _agent(LONG_TOKENS)
"""The finished run a resume reconnects into (about `LONG_TOKENS` chunks)."""


def _chat(session: str) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "go"}]}
    return {"id": session, "trigger": "submit-message", "messages": [message]}


async def _http_first_token(http: httpx.AsyncClient, session: str) -> float:
    started = time.perf_counter()
    first = None
    async with http.stream("POST", "/v1/agents/short/vercel-ai/chat", json=_chat(session)) as response:
        async for line in response.aiter_lines():  # to the run's end: the machine is quiet for the next one
            if first is None and line.startswith("data: ") and '"text-delta"' in line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream ended without text")
    return first


async def _grpc_first_token(client: StreamClient, session: str) -> float:
    started = time.perf_counter()
    await client.run("short", session, "go")
    first = None
    async for event in client.listen(session):
        if first is None and event.content_delta:
            first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the run ended without text")
    return first


async def _ids(http: httpx.AsyncClient, url: str) -> list[str]:
    ids = []
    async with http.stream("GET", url, params={"after": "0"}) as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
    return ids


async def _resume(http: httpx.AsyncClient, url: str, cursor: str) -> float:
    started = time.perf_counter()
    first = None
    async with http.stream("GET", url, headers={"last-event-id": cursor}) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: "):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"nothing after {cursor}")
    return first


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50) * 1000, 2), "p99": round(percentile(values, 99) * 1000, 2)}


async def measure(runs: int, resumes: int) -> dict[str, Any]:
    procs = Procs()
    try:
        async with private_redis(procs) as redis_server:
            await redis_server.reset()
            agents = {"short": "bench.web:short", "long": "bench.web:long"}
            config = ServerSettings(redis_url=redis_server.url, port=0, http_port=0, concurrency=8, agents=agents)
            async with (
                running_server(config, settings=Settings(redis_prefix="benchweb")) as server,
                StreamClient(f"127.0.0.1:{server.port}") as client,
                httpx.AsyncClient(base_url=server.http.url if server.http else "", timeout=60) as http,
            ):
                grpc_first, http_first = [], []
                for i in range(runs + 2):  # the first two warm both paths up
                    grpc = await _grpc_first_token(client, f"g{i}")
                    web = await _http_first_token(http, f"h{i}")
                    if i >= 2:
                        grpc_first.append(grpc)
                        http_first.append(web)
                async with http.stream("POST", "/v1/agents/long/vercel-ai/chat", json=_chat("long")) as response:
                    async for _ in response.aiter_lines():
                        pass
                url = "/v1/agents/long/vercel-ai/chat/long/stream"
                ids = await _ids(http, url)
                shuffled = random.Random(7)
                latencies = [await _resume(http, url, shuffled.choice(ids[:-1])) for _ in range(resumes)]
                return {
                    "runs": runs,
                    "first_token_ms_grpc": _ms(grpc_first),
                    "first_token_ms_http_vercel_ai": _ms(http_first),
                    "resume_chunks_in_run": len(ids),
                    "resumes": resumes,
                    "resume_to_first_chunk_ms": _ms(latencies),
                }
    finally:
        await procs.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--resumes", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="--runs 30 --resumes 60")
    args = parser.parse_args()
    runs, resumes = (30, 60) if args.quick else (args.runs, args.resumes)
    json.dump(asyncio.run(measure(runs, resumes)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
