"""What `run` and `listen` print of a run's events: JSON lines (a pipe, a file, or `--json`), plain text (`run --text`),
or rendered on a terminal (`cli_render`, with rich); one loop, `follow`, feeds each of them. And what `ls` prints."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from ..v1 import stream_pb2 as pb
from .cli_input import EXIT_WAITING, Prompts
from .grpc.client import Transcript, event_body

__all__ = ["JsonLines", "PlainAnswer", "RunOutput", "follow", "json_line", "outputs", "print_sessions"]


class RunOutput(Protocol):
    """Where a run's events go as they come."""

    def show(self, event: pb.Event, *, dropped: bool) -> None:
        """One event; `dropped`: a resume dropped output shown before (it comes again)."""

    def note(self, text: str) -> None:
        """A line of the CLI's own about the run (e.g. an answer sent)."""

    def left_waiting(self, event: pb.Event, how: str) -> None:
        """The run waits for input nobody here gave (`event`, its `input_required`): `how` answers it."""

    def finish(self, transcript: Transcript) -> None:
        """The run's events are over (its `end` came, or the listen ended)."""


async def follow(
    events: AsyncIterator[pb.Event], output: RunOutput, answer: Callable[[pb.Event], Awaitable[bool]] | None = None
) -> int:
    """Each event to `output`; `answer` called when the run waits for input (`False`, or none: left waiting, exit
    `EXIT_WAITING`). Exit 1 if the run failed, else 0."""
    transcript = Transcript()
    async for event in events:
        output.show(event, dropped=transcript.apply(event))
        if event.kind == pb.EVENT_KIND_INPUT_REQUIRED and (answer is None or not await answer(event)):
            return EXIT_WAITING
    output.finish(transcript)
    return 1 if transcript.error is not None else 0


def json_line(event: pb.Event) -> str:
    """The event as `listen` prints it: `{"id", "type", "origin", "body"}`."""
    return json.dumps({"id": event.id, "type": event.type_name, "origin": event.origin, "body": event_body(event)})


class JsonLines:
    """Each event as a JSON line on stdout (`listen`, and `--json`); the CLI's notes on stderr."""

    def show(self, event: pb.Event, *, dropped: bool) -> None:
        print(json_line(event), flush=True)

    def note(self, text: str) -> None:
        _stderr(f"[input] {text}\n")

    def left_waiting(self, event: pb.Event, how: str) -> None:
        _stderr(f"[input] the run waits for input; answer it with: {how}\n")

    def finish(self, transcript: Transcript) -> None:
        pass


class PlainAnswer:
    """`run --text`: the answer on stdout once the run ended (so it never gets output a resumed
    run superseded); thinking, tools, resumes and errors on stderr as they come."""

    def show(self, event: pb.Event, *, dropped: bool) -> None:
        if event.kind == pb.EVENT_KIND_RESUMED:
            _stderr(f"\n[resumed] its worker stopped; attempt {event.attempt} goes on\n")
        elif event.type == pb.EVENT_TYPE_ERROR:
            _stderr(f"\n[error] {event_body(event).get('msg')}\n")
        elif event.part_kind == pb.PART_KIND_THINKING:
            _stderr(event.content_delta or event.content)
        elif event.part_kind == pb.PART_KIND_TOOL_CALL:
            _stderr(f"\n[tool] {event.tool_name}({json.dumps(dict(event.args))})\n")
        elif event.part_kind == pb.PART_KIND_TOOL_RETURN:
            _stderr(f"[tool] {event.tool_name} -> {event.content}\n")

    def note(self, text: str) -> None:
        _stderr(f"[input] {text}\n")

    def left_waiting(self, event: pb.Event, how: str) -> None:
        print(json_line(event), flush=True)
        _stderr(f"[input] the run waits for input; answer it with: {how}\n")

    def finish(self, transcript: Transcript) -> None:
        print(transcript.text())


def outputs(*, on_terminal: bool, plain: RunOutput) -> tuple[RunOutput, Prompts | None]:
    """A run's output and where its prompts go: rendered on the terminal (rich loads only then), else `plain`
    (and the prompts on stderr)."""
    if not on_terminal:
        return plain, None
    from .cli_render import TerminalPrompts, TerminalRun, terminal

    console = terminal()
    return TerminalRun(console), TerminalPrompts(console)


def print_sessions(sessions: Sequence[pb.ActiveSession], *, as_json: bool, on_terminal: bool) -> None:
    """`ls`: a table on a terminal, else a JSON line a session (`as_json`) or one session id a line (`--text`)."""
    if on_terminal:
        from .cli_render import sessions_table, terminal

        console = terminal()
        if sessions:
            console.print(sessions_table(sessions, now=datetime.datetime.now(datetime.UTC)))
        else:
            console.print("no live runs", style="dim")
        return
    for s in sessions:
        if as_json:
            state = pb.RunState.Name(s.state).removeprefix("RUN_STATE_").lower()  # e.g. waiting_for_input
            fields = {"session_id": s.session_id, "run_id": s.run_id, "agent": s.agent, "state": state}
            print(json.dumps(fields | {"attempt": s.attempt, "started_unix_ms": s.started_unix_ms}))
        else:
            print(s.session_id)


def _stderr(text: str) -> None:
    print(text, end="", file=sys.stderr, flush=True)
