"""Run a prompt on an agent a pydantic-ai-stream server hosts, and print the answer as it streams."""

import asyncio
import sys
import time

from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.v1 import stream_pb2 as pb


async def quickstart(target: str, token: str | None, agent: str, prompt: str) -> None:
    async with StreamClient(target, token=token) as client:
        session_id = f"py-{time.time_ns()}"
        await client.run(agent, session_id, prompt)
        async for event in client.listen(session_id):  # resumes after the last event if the stream drops
            if event.part_kind == pb.PART_KIND_TEXT:
                print(event.content + event.content_delta, end="", flush=True)
            elif event.part_kind == pb.PART_KIND_TOOL_CALL:
                print(f"[tool] {event.tool_name}({dict(event.args)})")
            elif event.type == pb.EVENT_TYPE_ERROR:
                raise RuntimeError(f"run failed: {event_body(event)}")


if __name__ == "__main__":  # python examples/grpc_quickstart.py [TARGET] (the demo server by default)
    asyncio.run(quickstart(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051", None, "demo", "hi there"))
