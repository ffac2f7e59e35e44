"""The CLI on a terminal, with rich: a run's events rendered as they stream (text as it arrives, thinking dim,
tool calls and returns, retries, resumes, the calls it waits on, how it ended), and `ls` as a table.

Text is printed as it comes, never redrawn: a terminal's scrollback (and a recording of it) holds each token once,
in order.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

from google.protobuf.struct_pb2 import Struct
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..v1 import stream_pb2 as pb
from .grpc.client import Transcript, event_body

__all__ = ["TerminalPrompts", "TerminalRun", "sessions_table", "terminal"]

_RETURN_CHARS = 200  # of a tool's return: enough to see what it said, on a line or two
_OUTCOMES = {
    pb.TOOL_OUTCOME_FAILED: ("failed", "red"),
    pb.TOOL_OUTCOME_DENIED: ("denied", "yellow"),
    pb.TOOL_OUTCOME_INTERRUPTED: ("interrupted", "yellow"),
    pb.TOOL_OUTCOME_RETRIED: ("retry", "yellow"),
}
_STATE_STYLES = {pb.RUN_STATE_QUEUED: "blue", pb.RUN_STATE_RUNNING: "green", pb.RUN_STATE_WAITING_FOR_INPUT: "magenta"}


def terminal() -> Console:
    """The console on stdout (a terminal): no highlighting of numbers and such inside the agent's text."""
    return Console(highlight=False)


class TerminalRun:
    """A run's events rendered on `console` as they come (`cli_output.RunOutput`)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._inline: pb.PartKind.ValueType | None = None  # the kind of text the line ends in, mid-stream

    def show(self, event: pb.Event, *, dropped: bool) -> None:
        if event.type == pb.EVENT_TYPE_BEGIN:
            self._begin(event_body(event))
        elif event.kind == pb.EVENT_KIND_RESUMED:
            redone = f"; what it showed from step {event.idx} on comes again below" if dropped else ""
            self._line(Text(f"↻ its worker stopped; attempt {event.attempt} goes on{redone}", "yellow"))
        elif event.kind == pb.EVENT_KIND_INPUT_REQUIRED:
            waits = f"⏸ waits for input on {len(event.calls)} call{'s' if len(event.calls) > 1 else ''}"
            self._line(Text(waits, "bold magenta"))
        elif event.part_kind in (pb.PART_KIND_TEXT, pb.PART_KIND_THINKING):
            self._stream(event.part_kind, event.content_delta or event.content)
        elif event.part_kind == pb.PART_KIND_TOOL_CALL:
            self._line(Text.assemble(("→ ", "cyan"), (event.tool_name, "bold cyan"), f"({_args(event.args)})"))
        elif event.part_kind == pb.PART_KIND_TOOL_RETURN or event.part_kind_name == "retry-prompt":
            self._return(event)
        elif event.type in (pb.EVENT_TYPE_INFO, pb.EVENT_TYPE_CUSTOM):
            self._line(Text(f"· {event.type_name} {event.body_json}", "dim"))

    def note(self, text: str) -> None:
        self._line(Text(f"· {text}", "dim"))

    def left_waiting(self, event: pb.Event, how: str) -> None:
        self._line(Text.assemble(("the run waits for input; answer it with:\n  ", "magenta"), (how, "bold")))

    def finish(self, transcript: Transcript) -> None:
        message = (transcript.error or {}).get("msg")
        if transcript.error is not None and message == "canceled":
            self._line(Text("■ canceled", "bold yellow"))
        elif transcript.error is not None:
            self._line(Text.assemble(("✗ failed: ", "bold red"), (str(message), "red")))
        elif transcript.ended:
            self._line(Text("✓ done", "bold green"))
        else:
            self._break()

    def _begin(self, body: dict[str, object]) -> None:
        head = Text.assemble(("▶ ", "bold"), (str(body.get("agent") or "?"), "bold"), " · session ")
        head.append(str(body.get("session_id")), "bold").append(f" · run {body.get('run_id')}", "dim")
        self._line(head)
        prompt = body.get("user_prompt")
        if isinstance(prompt, str) and prompt:
            self._line(Text(f"> {prompt}", "dim"))

    def _stream(self, kind: pb.PartKind.ValueType, text: str) -> None:
        if self._inline != kind:
            self._break()
            self._inline = kind
        style = "dim italic" if kind == pb.PART_KIND_THINKING else ""
        self.console.print(Text(text, style), end="", soft_wrap=True)

    def _return(self, event: pb.Event) -> None:
        retried = event.part_kind_name == "retry-prompt"
        label, style = ("retry", "yellow") if retried else _OUTCOMES.get(event.outcome, ("", "green"))
        content = event.content if len(event.content) <= _RETURN_CHARS else event.content[:_RETURN_CHARS] + "…"
        line = Text.assemble(("↻ " if label == "retry" else "← ", style), (event.tool_name, f"bold {style}"))
        line.append(f" {label}: " if label else ": ", style).append(content)
        self._line(line)

    def _line(self, text: Text) -> None:
        self._break()
        self.console.print(text, soft_wrap=True)

    def _break(self) -> None:
        """End the line streamed text left open."""
        if self._inline is not None:
            self.console.print()
            self._inline = None


class TerminalPrompts:
    """The calls a run waits on, and the questions about them, on `console` (`cli_input.Prompts`)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def call(self, call: pb.DeferredCall) -> None:
        kind = "approval" if call.kind == pb.DEFERRED_CALL_KIND_APPROVAL else "result"
        line = Text.assemble(("? ", "bold magenta"), (call.tool_name, "bold"), f"({_args(call.args)})")
        line.append(f"  {kind}", "magenta").append(f" · call {call.tool_call_id}", "dim")
        self.console.print(line, soft_wrap=True)

    def say(self, text: str) -> None:
        self.console.print(Text(text, "magenta"), end="", soft_wrap=True)


def sessions_table(sessions: Sequence[pb.ActiveSession], *, now: datetime.datetime) -> Table:
    """`ls` on a terminal: a session a row, oldest first, with its run's state, attempt, and when it began."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("session", "agent", "state", "attempt", "run", "started", "age"):
        table.add_column(column, justify="right" if column in ("attempt", "age") else "left", no_wrap=True)
    today = now.astimezone().date()
    for session in sessions:
        started = datetime.datetime.fromtimestamp(session.started_unix_ms / 1000, datetime.UTC).astimezone()
        known = session.started_unix_ms > 0
        state = pb.RunState.Name(session.state).removeprefix("RUN_STATE_").lower().replace("_", " ")
        table.add_row(
            session.session_id,
            session.agent or "?",
            Text(state, _STATE_STYLES.get(session.state, "")),
            str(session.attempt) if session.attempt else "-",
            Text(session.run_id[:8], "dim"),
            (f"{started:%H:%M:%S}" if started.date() == today else f"{started:%Y-%m-%d %H:%M}") if known else "?",
            _age((now - started).total_seconds()) if known else "?",
        )
    return table


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"


def _args(args: Struct) -> str:
    return json.dumps(dict(args)) if args else ""
