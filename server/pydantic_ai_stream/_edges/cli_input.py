"""The CLI's answers to a run that waits for input: asked on a terminal (`run`), or given as options (`respond`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from ..v1 import stream_pb2 as pb
from .grpc.client import approve, deny, external_result, retry

__all__ = ["EXIT_WAITING", "Prompts", "add_answer_options", "answers_of_options", "ask", "respond_command"]

EXIT_WAITING = 3
"""`run`'s exit code when the run waits for input nobody at a terminal gave: it is left waiting, to be answered
with `respond` (0: answered, 1: failed or an error, 2: bad arguments)."""

_RETRY = "!retry"  # typed instead of a JSON value: the external call failed, the model is told why


class Prompts(Protocol):
    """Where `ask` shows a call and its questions (stderr, or a terminal's rendering)."""

    def call(self, call: pb.DeferredCall) -> None:
        """The call about to be asked about."""

    def say(self, text: str) -> None:
        """A question (no newline: the answer is typed after it), or a word on the last answer."""


class _Stderr:
    def call(self, call: pb.DeferredCall) -> None:
        self.say(f"\n[input] {call.tool_name}({json.dumps(dict(call.args))}) call {call.tool_call_id}\n")

    def say(self, text: str) -> None:
        print(text, end="", file=sys.stderr, flush=True)


def add_answer_options(command: argparse.ArgumentParser) -> None:
    """The `respond` command's answers: each option repeatable, one call id each."""
    for option, parse, metavar, help_text in (
        ("--approve", str, "CALL_ID", "approve the call"),
        ("--deny", _id_and_text, "CALL_ID[=MESSAGE]", "deny the call; the model is told MESSAGE"),
        ("--value", _id_and_json, "CALL_ID=JSON", "the result of an external call (any JSON value)"),
        ("--retry", _id_and_text, "CALL_ID=MESSAGE", "an external call that failed: the model sees MESSAGE as a retry"),
    ):
        command.add_argument(option, action="append", default=[], type=parse, metavar=metavar, help=help_text)


def answers_of_options(args: argparse.Namespace) -> list[pb.ToolAnswer]:
    """The answers the `respond` options give, in the order of the options' kinds."""
    answers = [approve(call_id) for call_id in args.approve]
    answers += [deny(call_id, message) for call_id, message in args.deny]
    answers += [external_result(call_id, value) for call_id, value in args.value]
    answers += [retry(call_id, message) for call_id, message in args.retry]
    return answers


def respond_command(
    session_id: str, run_id: str, calls: Sequence[pb.DeferredCall], answered: Sequence[pb.ToolAnswer]
) -> str:
    """The `respond` command that would answer the calls not `answered` (approving, with a JSON value to fill in)."""
    given = {answer.tool_call_id for answer in answered}
    options = [
        f"--approve {call.tool_call_id}" if _is_approval(call) else f"--value {call.tool_call_id}=JSON"
        for call in calls
        if call.tool_call_id not in given
    ]
    return " ".join(["pydantic-ai-stream respond", session_id, "--run", run_id, *options])


def _id_and_text(value: str) -> tuple[str, str]:
    call_id, _, text = value.partition("=")
    if not call_id:
        raise argparse.ArgumentTypeError("needs a call id before `=`")
    return call_id, text


def _id_and_json(value: str) -> tuple[str, Any]:
    call_id, equals, text = value.partition("=")
    if not call_id or not equals:
        raise argparse.ArgumentTypeError("needs CALL_ID=JSON")
    try:
        return call_id, json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None


async def ask(
    calls: Sequence[pb.DeferredCall], *, approve_all: bool, prompts: Prompts | None = None
) -> tuple[list[pb.ToolAnswer], bool]:
    """The answers to the calls, asked through `prompts` (default: stderr) and read from stdin (approvals yes with
    `approve_all`), and whether every call has one: not when a call needs a person and stdin is not a terminal,
    or ends first."""
    prompts = prompts or _Stderr()
    answers = [approve(call.tool_call_id) for call in calls if approve_all and _is_approval(call)]
    asked = [call for call in calls if not (approve_all and _is_approval(call))]
    if asked and not sys.stdin.isatty():
        return answers, False
    for call in asked:
        prompts.call(call)
        answer = await (_ask_approval(call, prompts) if _is_approval(call) else _ask_result(call, prompts))
        if answer is None:
            return answers, False
        answers.append(answer)
    return answers, True


def _is_approval(call: pb.DeferredCall) -> bool:
    return call.kind == pb.DEFERRED_CALL_KIND_APPROVAL


async def _ask_approval(call: pb.DeferredCall, prompts: Prompts) -> pb.ToolAnswer | None:
    reply = await _line("approve? [y/N] ", prompts)
    if reply is None:
        return None
    if reply.lower() in ("y", "yes"):
        return approve(call.tool_call_id)
    message = await _line("denial message for the model (optional): ", prompts)
    return None if message is None else deny(call.tool_call_id, message)


async def _ask_result(call: pb.DeferredCall, prompts: Prompts) -> pb.ToolAnswer | None:
    while True:
        reply = await _line(f"result (JSON, or {_RETRY} MESSAGE): ", prompts)
        if reply is None:
            return None
        if reply.startswith(_RETRY):
            return retry(call.tool_call_id, reply.removeprefix(_RETRY).strip())
        try:
            return external_result(call.tool_call_id, json.loads(reply))
        except ValueError as e:
            prompts.say(f"not JSON ({e}); try again\n")


async def _line(prompt: str, prompts: Prompts) -> str | None:
    """A line typed after `prompt`, without its newline; `None` at the end of stdin."""
    prompts.say(prompt)
    # Waits on the loop, not in a thread (which Ctrl-C could not stop): a terminal is readable once a whole line
    # is typed, and a read of it returns that one line.
    loop = asyncio.get_running_loop()
    typed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), typed.set)
    try:
        await typed.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
    line = sys.stdin.readline()
    return line.strip() if line else None
