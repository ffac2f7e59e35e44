"""The gRPC fan-out's floor: `AgentStreamService.Listen` served by grpc alone, nothing else done.

`python -m bench.grpc_floor aio|sync --sessions M --listeners K --tokens T --interval S` serves sessions
`f0`..`f{M-1}` (K streams each) on a free loopback port and prints `serving ... on HOST:PORT` (as `serve` does).
A Listen of a session gets its `begin` at once; on a `go` line on stdin each session's tokens follow on the
fan-out's schedule (`T` tokens `S` seconds apart, session `i` offset by `S * i / M`, as `fanout-write`'s runs
tick), each a timestamp (the clients' latency math), then `end`. Every response is serialized once per session
and sent as bytes to its streams (no response serializer), as our servicer does. The garbage collector is tuned
as `serve` tunes it. With `--idle` (aio) it sends nothing at all and prints a line as each stream opens.

- `aio`: `grpc.aio`, one event loop; per stream a generator awaiting its session's next response.
- `sync`: `grpc.server` with a `ThreadPoolExecutor`: a thread per open stream, blocked on its session's condition.

SIGTERM ends it at once (Python's default): a sync server's threads wait on conditions that nothing else ends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from pydantic_ai_stream._edges.process import collect_less
from pydantic_ai_stream.v1 import stream_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["AgentStreamService"].full_name
IDLE_OPEN = "idle streams open:"
BEGIN = pb.ListenResponse(event=pb.Event(id="0-1", type=pb.EVENT_TYPE_BEGIN)).SerializeToString()


def token_responses(k: int, tokens: int, due_ns: int) -> list[bytes]:
    """The serialized responses of a session's token `k` (the first starts the text part), due at `due_ns`, as
    the bench's models write tokens (`<due_ns>:<made_ns>`); `end` after the last."""
    text, event_id = f"{due_ns}:{time.monotonic_ns()} ", f"{k + 1}-0"
    if k == 0:
        event = pb.Event(id=event_id, type=pb.EVENT_TYPE_EVENT, kind=pb.EVENT_KIND_PART_START,
                         part_kind=pb.PART_KIND_TEXT, content=text)  # fmt: skip
    else:
        event = pb.Event(id=event_id, type=pb.EVENT_TYPE_EVENT, kind=pb.EVENT_KIND_PART_DELTA,
                         part_delta_kind=pb.PART_KIND_TEXT, content_delta=text)  # fmt: skip
    responses = [pb.ListenResponse(event=event).SerializeToString()]
    if k == tokens - 1:
        end = pb.Event(id=f"{tokens + 1}-0", type=pb.EVENT_TYPE_END)
        responses.append(pb.ListenResponse(event=end).SerializeToString())
    return responses


def schedule(sessions: int, tokens: int, interval: float) -> list[tuple[float, int, int]]:
    """(seconds after `go`, session, token) of every token, in time order: `fanout-write`'s runs' pace."""
    due = [(interval * (i / sessions + k), i, k) for i in range(sessions) for k in range(tokens)]
    return sorted(due)


@dataclass
class _Published:
    """A session's responses so far; `ended` once `end` is among them."""

    responses: list[bytes] = field(default_factory=lambda: [BEGIN])
    ended: bool = False


@dataclass
class AioSession(_Published):
    changed: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    """Set when responses are added; replaced by a new one."""

    def publish(self, responses: list[bytes], ended: bool) -> None:
        self.responses += responses
        self.ended = ended
        self.changed.set_result(None)
        self.changed = asyncio.get_running_loop().create_future()

    async def listen(self) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            while sent < len(self.responses):
                yield self.responses[sent]
                sent += 1
            if self.ended:
                return
            await self.changed


@dataclass
class SyncSession(_Published):
    condition: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, responses: list[bytes], ended: bool) -> None:
        with self.condition:
            self.responses += responses
            self.ended = ended
            self.condition.notify_all()

    def listen(self) -> Iterator[bytes]:
        sent = 0
        while True:
            with self.condition:
                while sent == len(self.responses):
                    self.condition.wait()
                new, ended = self.responses[sent:], self.ended
            yield from new
            sent += len(new)
            if ended:
                return


def _handler(behavior: Callable[..., Any]) -> grpc.GenericRpcHandler:
    """`Listen` only; its responses are bytes, sent as they are (no response serializer)."""
    listen: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(
        behavior, request_deserializer=pb.ListenRequest.FromString
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Listen": listen})


def _ready(port: int, variant: str) -> None:
    print(f"serving {SERVICE} on 127.0.0.1:{port} (floor: {variant})", file=sys.stderr, flush=True)


async def serve_aio(args: argparse.Namespace) -> None:
    sessions = {f"f{i}": AioSession() for i in range(args.sessions)}
    opened = 0

    async def listen(request: pb.ListenRequest, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        if (session := sessions.get(request.session_id)) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, request.session_id)
        if args.idle:  # nothing is ever sent: count the stream (the client waits for the count), then wait
            nonlocal opened
            opened += 1
            print(f"{IDLE_OPEN} {opened}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()
        async for response in session.listen():
            yield response

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(listen),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _ready(port, "grpc.aio")
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "go", line
    started = time.monotonic_ns()
    ordered = list(sessions.values())
    for at, i, k in schedule(args.sessions, args.tokens, args.interval):
        due = started + int(at * 1e9)
        if (delay := (due - time.monotonic_ns()) / 1e9) > 0:
            await asyncio.sleep(delay)  # the tokens' pace
        ordered[i].publish(token_responses(k, args.tokens, due), ended=k == args.tokens - 1)
    await asyncio.Event().wait()  # until SIGTERM


def serve_sync(args: argparse.Namespace) -> None:
    sessions = {f"f{i}": SyncSession() for i in range(args.sessions)}

    def listen(request: pb.ListenRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        if (session := sessions.get(request.session_id)) is None:
            context.abort(grpc.StatusCode.NOT_FOUND, request.session_id)
        yield from session.listen()

    # A thread per open stream: the pool must hold every stream (a stream beyond it waits for a thread).
    server = grpc.server(ThreadPoolExecutor(max_workers=args.sessions * args.listeners + 16))
    server.add_generic_rpc_handlers((_handler(listen),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _ready(port, "sync grpc.server")
    assert sys.stdin.readline().strip() == "go"
    started = time.monotonic_ns()
    ordered = list(sessions.values())
    for at, i, k in schedule(args.sessions, args.tokens, args.interval):
        due = started + int(at * 1e9)
        if (delay := (due - time.monotonic_ns()) / 1e9) > 0:
            time.sleep(delay)  # the tokens' pace
        ordered[i].publish(token_responses(k, args.tokens, due), ended=k == args.tokens - 1)
    threading.Event().wait()  # until SIGTERM


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor", description=__doc__)
    parser.add_argument("variant", choices=["aio", "sync"])
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--listeners", type=int, required=True, help="streams per session (sizes the sync pool)")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--idle", action="store_true", help="aio: send nothing, print each stream opened")
    args = parser.parse_args()
    collect_less()
    if args.variant == "aio":
        asyncio.run(serve_aio(args))
    else:
        serve_sync(args)


if __name__ == "__main__":
    main()
