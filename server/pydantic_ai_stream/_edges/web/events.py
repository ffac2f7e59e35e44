"""A run's stream entries back into pydantic-ai's `AgentStreamEvent`s (no I/O), for its UI adapters to encode.

`_core/events.py` says how pydantic-ai's events became entries; `EntryEvents` goes the other way, one segment
at a time. A segment is what one protocol response carries: a run from its `begin`, or a waiting run's
continuation from the entry after its `input_required`, up to that run's next `input_required` or its `end`.
Text and thinking parts are closed (`PartEndEvent`) when the next part starts or the node ends; tool calls,
announced complete, become their start and end and, at the node's end, the call event a tool run has.

`WebCursor` is the SSE `id` of a chunk: `<entry id>/<k>` for the k-th chunk (from 0) one entry encoded to; a
plain `<entry id>` is after every chunk of that entry (a gRPC event id resumes there too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import (
    AgentStreamEvent,
    FinalResultEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    OutputToolCallEvent,
    OutputToolResultEvent,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.run import AgentRunResult, AgentRunResultEvent
from pydantic_ai.tools import DeferredToolRequests

from ..._core.cursor import Cursor
from ..._core.entry import Entry
from ..._core.errors import InvalidIdError
from ..._core.events import ToolOutcome
from ..._core.keys import excerpt
from ..._core.names import END, ERROR, EVENT, INPUT_REQUIRED, ORIGIN_STREAM

__all__ = ["CANCELED", "EntryEvents", "NativeEvent", "RunFailedError", "WebCursor", "ends_segment"]

NativeEvent = AgentStreamEvent | AgentRunResultEvent[Any]
"""What pydantic-ai's UI event streams take."""

CANCELED = "canceled"
"""The `msg` of the `error` a cancelled run ends with."""


class RunFailedError(Exception):
    """The run ended with an `error` entry (it crashed, its worker died, its wait expired): the protocols' error."""


def ends_segment(entry: Entry) -> bool:
    """Whether `entry` is the last of a segment: the run's `end`, or an `input_required` (the run waits)."""
    return entry.type == END or (entry.type == EVENT and entry.body.get("event") == INPUT_REQUIRED)


@dataclass(frozen=True, slots=True)
class WebCursor:
    """A chunk's place: entry `entry` (a stream cursor), and which of its chunks (`None`: all of them)."""

    entry: Cursor
    chunk: int | None = None

    @classmethod
    def parse(cls, value: str | None) -> WebCursor:
        """`<entry id>` or `<entry id>/<k>`; `None` or `0`: before the run's `begin`. `InvalidIdError` otherwise."""
        entry_id, slash, chunk = (value or "0").partition("/")
        if slash and not (chunk.isdigit() and len(chunk) <= 9):
            raise InvalidIdError(f"cursor {excerpt(value or '')} is not '<stream entry id>[/<chunk>]'")
        return cls(Cursor.parse(entry_id), int(chunk) if slash else None)

    def has(self, entry_id: str, chunk: int) -> bool:
        """Whether the reader at this cursor has chunk `chunk` of entry `entry_id` already."""
        key = Cursor.key_of(entry_id)
        if key != self.entry.key:
            return key < self.entry.key
        return self.chunk is None or chunk <= self.chunk

    @staticmethod
    def of(entry_id: str, chunk: int) -> str:
        """The SSE id of chunk `chunk` of entry `entry_id`."""
        return f"{entry_id}/{chunk}"


@dataclass(kw_only=True)
class EntryEvents:
    """One segment's entries to native events, in order (`of` each entry); raises at an `error` entry of the
    runtime, as a run that failed (`RunFailedError`) or was cancelled (`RunCancelled`) raises in pydantic-ai."""

    _open: tuple[_PartKey, TextPart | ThinkingPart] | None = None
    """The text or thinking part streaming now, by its node and its index in the response."""
    _calls: list[ToolCallPart] = field(default_factory=list)
    """The node's tool calls, announced at its end as their tools would run."""
    _output_tool: str | None = None
    """The output tool the node's `answer` named, if any: its call and return are the output's."""
    _shown: dict[_PartKey, str] = field(default_factory=dict)
    """Text and thinking sent so far, by part: after a `resumed` marker the new attempt's is sent only beyond it."""
    _shown_tools: set[tuple[str, str]] = field(default_factory=set)
    """Tool calls and returns sent (`call`/`return`, call id): a resumed attempt's copies are not sent again."""
    _again: dict[_PartKey, int] | None = None
    """Once a worker died and another resumed the run: how much of each part shown before the new attempt has
    sent again (`None` before any `resumed`)."""

    def of(self, entry: Entry) -> list[NativeEvent]:
        """The events `entry` stands for (none for `begin`, `info` and the node boundaries that carry nothing)."""
        if entry.type == ERROR and entry.origin == ORIGIN_STREAM:
            msg = str(entry.body.get("msg") or "the run failed")
            if msg == CANCELED:
                raise RunCancelled("The run was cancelled.")
            raise RunFailedError(msg)
        if entry.type == END:
            return [*self._node_end(), AgentRunResultEvent(AgentRunResult(output=None))]
        if entry.type != EVENT:
            return []
        return self._event(entry.body)

    def _event(self, body: Mapping[str, Any]) -> list[NativeEvent]:
        kind = body.get("event")
        if kind == "part_start":
            return self._part(body)
        if kind == "part_delta":
            return self._delta(body)
        if kind == "llm-end":
            return self._node_end(_key(body)[0])
        if kind == "answer":
            self._output_tool = body.get("tool_name")
            return [FinalResultEvent(tool_name=body.get("tool_name"), tool_call_id=body.get("tool_call_id"))]
        if kind == INPUT_REQUIRED:
            calls: list[Mapping[str, Any]] = body.get("calls") or []
            requests = DeferredToolRequests(
                approvals=[_call(c) for c in calls if c.get("kind") == "approval"],
                calls=[_call(c) for c in calls if c.get("kind") != "approval"],
            )
            return [*self._node_end(), AgentRunResultEvent(AgentRunResult(output=requests))]
        if kind == "resumed":  # a worker died: another redoes node `idx` on, and what was shown is not resent
            self._again = {}
        return []  # llm-begin

    def _part(self, body: Mapping[str, Any]) -> list[NativeEvent]:
        kind, index, key = body.get("part_kind"), body.get("event_idx"), _key(body)
        if index is None:  # a tool's return, or its retry prompt
            if self._sent_before(("return", str(body.get("tool_call_id")))):
                return []
            return [*self._close(), *self._return(body)]
        if kind in ("text", "thinking"):
            content = str(body.get("content") or "")
            if self._again is not None and key in self._shown:  # a resumed attempt sends it again
                self._again[key] = 0
                return self._catch_up(key, content)
            events = self._close()
            part: TextPart | ThinkingPart = TextPart(content) if kind == "text" else ThinkingPart(content)
            self._open, self._shown[key] = (key, part), content
            return [*events, PartStartEvent(index=index, part=part)]
        if kind == "tool-call" and not self._sent_before(("call", str(body.get("tool_call_id")))):
            call = _call(body)
            self._calls.append(call)
            return [*self._close(), PartStartEvent(index=index, part=call), PartEndEvent(index=index, part=call)]
        return []

    def _sent_before(self, tool: tuple[str, str]) -> bool:
        """Whether a resumed attempt sends again a tool call or return sent before (else: remember it was sent)."""
        if tool in self._shown_tools:
            return self._again is not None
        self._shown_tools.add(tool)
        return False

    def _delta(self, body: Mapping[str, Any]) -> list[NativeEvent]:
        key, text = _key(body), str(body.get("content_delta") or "")
        if self._again is not None and key in self._again:
            return self._catch_up(key, text)
        return self._extend(key, text)

    def _catch_up(self, key: _PartKey, piece: str) -> list[NativeEvent]:
        """`piece` of a part a resumed attempt sends again: only what goes beyond what was shown of it, and only
        while it is the part still open (a part closed was shown in full)."""
        assert self._again is not None
        before = self._again[key]
        self._again[key] = before + len(piece)
        return self._extend(key, piece[max(0, len(self._shown[key]) - before) :])

    def _extend(self, key: _PartKey, text: str) -> list[NativeEvent]:
        if self._open is None or self._open[0] != key or not text:
            return []
        part, index = self._open[1], key[1]
        if isinstance(part, TextPart):
            delta: TextPartDelta | ThinkingPartDelta = TextPartDelta(text)
            self._open = (key, TextPart(part.content + text))
        else:
            delta = ThinkingPartDelta(content_delta=text)
            self._open = (key, ThinkingPart(part.content + text))
        self._shown[key] += text
        return [PartDeltaEvent(index=index, delta=delta)]

    def _return(self, body: Mapping[str, Any]) -> list[NativeEvent]:
        outcome: ToolOutcome | Literal["success"] = body.get("outcome") or (
            "retried" if body.get("part_kind") == "retry-prompt" else "success"
        )
        part = ToolReturnPart(
            tool_name=str(body.get("tool_name") or ""),
            content=body.get("content"),
            tool_call_id=str(body.get("tool_call_id") or ""),
            outcome=outcome,
        )
        if part.tool_name == self._output_tool:
            return [OutputToolResultEvent(part)]
        return [FunctionToolResultEvent(part)]

    def _close(self) -> list[NativeEvent]:
        if self._open is None:
            return []
        (_, index), part = self._open
        self._open = None
        return [PartEndEvent(index=index, part=part)]

    def _node_end(self, idx: float = math.inf) -> list[NativeEvent]:
        """Close the open part (unless it is of a later node: a resumed attempt redoes the nodes before it) and
        announce the node's calls."""
        events = self._close() if self._open is not None and self._open[0][0] <= idx else []
        for call in self._calls:
            output = call.tool_name == self._output_tool
            events.append(OutputToolCallEvent(call) if output else FunctionToolCallEvent(call, args_valid=True))
        self._calls = []
        return events


_PartKey = tuple[int, int]
"""A response part: its node (`idx`) and its index in the response (`event_idx`)."""


def _key(body: Mapping[str, Any]) -> _PartKey:
    idx, index = body.get("idx"), body.get("event_idx")
    return (idx if isinstance(idx, int) else 0, index if isinstance(index, int) else -1)


def _call(body: Mapping[str, Any]) -> ToolCallPart:
    args = body.get("args")
    return ToolCallPart(
        tool_name=str(body.get("tool_name") or ""),
        args=args if isinstance(args, dict) else {},
        tool_call_id=str(body.get("tool_call_id") or ""),
    )
