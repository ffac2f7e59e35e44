"""`pydantic-ai-stream`: serve agents over gRPC, and talk to such a server (run, respond, listen, ls, cancel)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import mimetypes
import os
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from ..v1 import stream_pb2 as pb
from .cli_input import EXIT_WAITING, add_answer_options, answers_of_options, ask, respond_command
from .cli_output import JsonLines, PlainAnswer, follow, json_line, outputs, print_sessions
from .grpc.client import StreamClient, event_body, input_calls

if TYPE_CHECKING:
    from .config import ServerSettings

__all__ = ["main"]

# `run --if-busy`: what a run does on a session that already has a queued or live run.
_IF_BUSY = {
    "reject": pb.BUSY_POLICY_REJECT,
    "enqueue": pb.BUSY_POLICY_ENQUEUE,
    "interrupt": pb.BUSY_POLICY_INTERRUPT,
    "rollback": pb.BUSY_POLICY_ROLLBACK,
}
# Seconds an enqueued run may take to begin after the run before it ended (that end starts it).
_BEGIN_SECONDS = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pydantic-ai-stream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve agents over gRPC (options also from PYDANTIC_AI_STREAM_*)")
    worker = commands.add_parser("worker", help="execute queued runs of agents, without serving gRPC")
    for command in (serve, worker):
        command.add_argument("--agent", action="append", default=[], metavar="NAME=MODULE:ATTR", help="host an agent")
        command.add_argument("--no-demo", action="store_true", help="do not host the built-in `demo` agent")
        redis_help = (
            "Redis URL (default: REDIS_URL, else an embedded Redis)"
            if command is serve
            else "URL of the Redis its servers use (default: REDIS_URL; required: a worker has no embedded Redis)"
        )
        command.add_argument("--redis", metavar="URL", help=redis_help)
        command.add_argument("--redis-cluster", action="store_true", help="the Redis URL names a Redis Cluster node")
        command.add_argument(
            "--redis-max-connections", type=int, help="connections the shared pool may open (default 6; plus 1 reader)"
        )
        command.add_argument(
            "--concurrency",
            type=int,
            help="runs executed at once (default 64; serve: 0 executes none, and accepts runs of the agents "
            "live workers host)",
        )
        command.add_argument("--grace", type=float, help="seconds in-flight runs get on SIGTERM (default 10)")
        command.add_argument(
            "--processes",
            type=int,
            help="processes to run, each its own event loop, Redis pool and worker (default 1; serve: on one "
            "port; needs --redis)",
        )
        command.add_argument(
            "--sessions", metavar="URL", help="keep conversations in PostgreSQL (postgresql://...; default: Redis)"
        )
        command.add_argument("--telemetry", action="store_true", help="OpenTelemetry traces and metrics (otel extra)")
        command.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
        command.add_argument("--otlp-endpoint", metavar="URL", help="export traces and metrics over OTLP/gRPC")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--token", action="append", default=[], metavar="TOKEN=SCOPE:USER[:AGENTS]", help="bearer token")
    serve.add_argument("--tls-cert", help="server certificate chain (PEM)")
    serve.add_argument("--tls-key", help="server private key (PEM)")
    serve.add_argument("--tls-client-ca", help="CA for client certificates: require them (mTLS)")
    serve.add_argument("--listen-cache-bytes", type=int, help="bytes of events Listen streams share (default 16 MiB)")
    serve.add_argument(
        "--a2a",
        action=argparse.BooleanOptionalAction,
        help="serve A2A (lf.a2a.v1.A2AService) on the same port (default: when the a2a extra is installed)",
    )
    serve.add_argument("--a2a-url", metavar="HOST:PORT", help="where A2A clients reach this server, as cards say")
    serve.add_argument("--http-port", type=int, metavar="PORT", help="serve HTTP too: A2A JSON-RPC, REST, agent cards")

    for name, help_text in (
        ("run", "start a run and show it as it streams, asking for the input it waits on (JSON lines into a pipe)"),
        ("respond", "answer the calls a session's run waits on (approvals, external results)"),
        ("listen", "show a session's run as it streams (JSON lines when stdout is not a terminal)"),
        ("ls", "list your sessions with a live run (a table on a terminal, JSON lines into a pipe)"),
        ("cancel", "cancel a session's live run"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--target", default=os.environ.get("PYDANTIC_AI_STREAM_TARGET", "localhost:50051"))
        command.add_argument("--token", default=os.environ.get("PYDANTIC_AI_STREAM_TOKEN"), help="bearer token")
        command.add_argument("--tls-ca", help="trust this CA (PEM) and use TLS")
        if name in ("run", "listen", "ls"):
            form = command.add_mutually_exclusive_group()
            form.add_argument(
                "--json", action="store_true", help="JSON lines, also on a terminal (a run's events, or a session each)"
            )
            if name != "listen":
                form.add_argument(
                    "--text",
                    action="store_true",
                    help="plain text, also into a pipe: the answer on stdout, the rest on stderr (ls: the session ids)",
                )
        if name == "run":
            command.add_argument("agent")
            command.add_argument("prompt")
            command.add_argument("--session", help="session id (default: a new one)")
            command.add_argument(
                "--if-busy",
                choices=list(_IF_BUSY),
                default="reject",
                help="if the session has a queued or live run: fail (reject, the default), wait behind it and then "
                "run (enqueue), or cancel it first, keeping its messages (interrupt) or dropping them (rollback)",
            )
            command.add_argument(
                "--context", type=_json_object, metavar="JSON", help="request context for the agent's deps (an object)"
            )
            command.add_argument(
                "--attach",
                action="append",
                default=[],
                type=_attachment,
                metavar="PATH",
                help="a file for the model after the prompt (repeatable; media type from its extension)",
            )
            command.add_argument(
                "--approve-all",
                action="store_true",
                help="approve every call that needs an approval, without asking",
            )
            command.epilog = (
                "On a terminal it shows the run as it streams (text, thinking, tool calls and returns); else it "
                "prints the answer once the run ended, the rest on stderr. When the run waits for input it asks on "
                "the terminal; when stdin is not a terminal it prints the waiting event (a JSON line, as `listen` "
                f"does) and exits {EXIT_WAITING}, leaving the run waiting for `respond`."
            )
        if name == "respond":
            command.add_argument("session")
            command.add_argument("--run", default="", help="the run that waits (default: the session's current run)")
            add_answer_options(command)
        if name in ("listen", "cancel"):
            command.add_argument("session")
        if name == "listen":
            command.add_argument("--after", default="", help="resume after this event id")
    return parser


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def _attachment(value: str) -> pb.Attachment:
    path = Path(value)
    media_type = mimetypes.guess_type(path.name)[0]
    if media_type is None:
        raise argparse.ArgumentTypeError(f"no media type is known for {path.name}")
    try:
        return pb.Attachment(data=path.read_bytes(), media_type=media_type, name=path.name)
    except OSError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `pydantic-ai-stream` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "respond" and not answers_of_options(args):
        parser.error("respond: give at least one answer (--approve, --deny, --value, --retry)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("serve", "worker"):
        _serve(args, sys.argv[1:] if argv is None else list(argv))
        return
    try:
        sys.exit(asyncio.run(_client_command(args)))
    except grpc.aio.AioRpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # e.g. `listen ... | head`: the reader left, which is fine
        sys.stderr.close()
        sys.exit(0)
    except KeyboardInterrupt:  # Ctrl-C: the server's runs go on (a waiting one still waits); no traceback
        sys.exit(130)


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from .config import ServerSettings
    from .grpc.server import serve
    from .process import collect_less, work
    from .processes import run_processes

    overrides: dict[str, Any] = {
        "redis_url": args.redis,
        "redis_max_connections": args.redis_max_connections,
        "shutdown_grace": args.grace,
        "concurrency": args.concurrency,
        "sessions": args.sessions,
        "metrics_port": args.metrics_port,
        "otlp_endpoint": args.otlp_endpoint,
        "processes": args.processes,
    }
    if args.command == "serve":
        overrides |= {
            "host": args.host,
            "port": args.port,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "listen_cache_bytes": args.listen_cache_bytes,
            "a2a": args.a2a,
            "a2a_url": args.a2a_url,
            "http_port": args.http_port,
        }
    config = ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
    if args.agent:
        config.agents = {**config.agents, **dict(spec.split("=", 1) for spec in args.agent)}
    if getattr(args, "token", None):
        config.tokens = [*config.tokens, *args.token]
    if args.no_demo:
        config.demo = False
    if args.redis_cluster:
        config.redis_cluster = True
    if args.telemetry:
        config.telemetry = True
    try:
        if config.processes > 1:
            _check_processes(config)
            serving = args.command == "serve"
            host, port = (config.host, config.port) if serving else (None, None)
            sys.exit(run_processes(argv, config.processes, host=host, port=port))
        collect_less()
        asyncio.run(serve(config) if args.command == "serve" else work(config))
    except (ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _check_processes(config: ServerSettings) -> None:
    """Raise `ValueError` for what N processes cannot share: an embedded Redis each, one HTTP or metrics port."""
    if not config.redis_url:
        raise ValueError("--processes needs the Redis they share: pass --redis or set REDIS_URL")
    if config.http_port is not None or config.metrics_port is not None:
        raise ValueError("--processes serves gRPC only: --http-port and --metrics-port take one process")


async def _client_command(args: argparse.Namespace) -> int:
    root = open(args.tls_ca, "rb").read() if args.tls_ca else None  # noqa: SIM115, ASYNC230 - read once at start
    text = getattr(args, "text", False)
    on_terminal = sys.stdout.isatty() and not getattr(args, "json", False) and not text
    as_json = not on_terminal and not text  # into a pipe or a file: JSON lines, unless `--text`
    async with StreamClient(args.target, token=args.token, root_certificates=root) as client:
        if args.command == "ls":
            print_sessions(await client.active_sessions(), as_json=as_json, on_terminal=on_terminal)
        elif args.command == "cancel":
            cancelled = await client.cancel(args.session)
            print("cancelled" if cancelled else "no live run")
            return 0 if cancelled else 1
        elif args.command == "listen":
            return await _listen(client, args, on_terminal)
        elif args.command == "respond":
            run_id = args.run or await _current_run(client, args.session)
            print(_responded(await client.respond(args.session, run_id, answers_of_options(args))))
        else:
            return await _run(client, args, on_terminal, as_json=as_json)
    return 0


async def _listen(client: StreamClient, args: argparse.Namespace, on_terminal: bool) -> int:
    """`listen`: the session's run to its end, as JSON lines, or rendered on a terminal (where a run that waits
    for input is followed on, once it said how to answer it)."""
    if not on_terminal:
        async for event in client.listen(args.session, after=args.after):
            print(json_line(event))
        return 0
    output, _ = outputs(on_terminal=True, plain=JsonLines())
    run_id = ""  # of the run followed: its `begin` says

    async def events() -> AsyncGenerator[pb.Event]:
        nonlocal run_id
        async for event in client.listen(args.session, after=args.after):
            run_id = str(event_body(event)["run_id"]) if event.type == pb.EVENT_TYPE_BEGIN else run_id
            yield event

    async def waits(event: pb.Event) -> bool:
        waiting = run_id or await _current_run(client, args.session)  # resumed `--after` its `begin`
        output.left_waiting(event, respond_command(args.session, waiting, input_calls(event), []))
        return True

    async with aclosing(events()) as followed:
        await follow(followed, output, answer=waits)
    return 0


async def _run(client: StreamClient, args: argparse.Namespace, on_terminal: bool, *, as_json: bool) -> int:
    """`run`: start the run, then follow it to its end, asking for the input it waits on."""
    session_id = args.session or uuid.uuid4().hex[:12]
    started = await client.run(
        args.agent,
        session_id,
        args.prompt,
        if_busy=_IF_BUSY[args.if_busy],
        context=args.context,
        attachments=args.attach,
    )
    waiting = " waiting behind the session's run" if started.waiting else ""
    output, prompts = outputs(on_terminal=on_terminal, plain=JsonLines() if as_json else PlainAnswer())
    if on_terminal:  # its `begin` says which run it is, once it began
        if started.waiting:
            output.note(f"session {session_id} run {started.run_id}{waiting}")
    else:
        print(f"session {session_id} run {started.run_id}{waiting}", file=sys.stderr)

    async def answer(event: pb.Event) -> bool:
        try:
            answers, complete = await ask(input_calls(event), approve_all=args.approve_all, prompts=prompts)
        except asyncio.CancelledError:  # Ctrl-C at a prompt: nothing was sent
            how = respond_command(session_id, started.run_id, input_calls(event), [])
            print(f"\n[input] the run still waits for input; answer it with: {how}", file=sys.stderr)
            raise
        if answers:  # some may be all there is: they are held until the rest come with `respond`
            output.note(_responded(await client.respond(session_id, started.run_id, answers)))
        if not complete:
            output.left_waiting(event, respond_command(session_id, started.run_id, input_calls(event), answers))
        return complete

    async with aclosing(_events_of_run(client, session_id, started.run_id)) as events:
        return await follow(events, output, answer=answer)


def _responded(response: pb.RespondResponse) -> str:
    if response.continued:
        return "continued"
    return "held; still waiting on " + " ".join(response.pending_call_ids)


async def _current_run(client: StreamClient, session_id: str) -> str:
    """The id of the session's current run, from its `begin` (Listen's first event; the Listen ends with the
    client's channel)."""
    async for event in client.listen(session_id):
        return str(event_body(event)["run_id"])
    raise AssertionError("Listen yields a run's `begin` first")  # pragma: no cover - it returns at `end` only


async def _events_of_run(client: StreamClient, session_id: str, run_id: str) -> AsyncGenerator[pb.Event]:
    """The events of the session's run `run_id`. Listen gives the current run, so a run that waits behind
    others follows each of them to its `end`, then listens again; DEADLINE_EXCEEDED if it has not begun
    `_BEGIN_SECONDS` after the run before it ended."""
    ended = None  # the run last followed to its `end`
    deadline = time.monotonic() + _BEGIN_SECONDS
    while True:
        current: str | None = None
        async for event in client.listen(session_id):
            if current is None:  # the first event: the run's `begin`
                current = event_body(event)["run_id"]
            if current == run_id:
                yield event
        if current == run_id:
            return
        if current != ended:
            ended, deadline = current, time.monotonic() + _BEGIN_SECONDS
        elif time.monotonic() > deadline:
            details = f"run {run_id} did not begin within {_BEGIN_SECONDS:.0f} s of the session's run ending"
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), details
            )
        else:
            await asyncio.sleep(0.1)  # the next run's `begin` is not written yet: poll back-off, not synchronisation
