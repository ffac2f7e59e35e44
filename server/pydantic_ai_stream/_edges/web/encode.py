"""A session's entries encoded by pydantic-ai's own UI event streams (`VercelAIEventStream`, `AGUIEventStream`),
each chunk with its exact cursor (`WebCursor`); what they lack is added here: ids derived from the stream (a
replay gives the same ones), AG-UI timestamps from the entries, and Vercel AI's approval requests of a run
that waits in Redis.

A response always replays the run from its `begin` and sends nothing up to its cursor: the protocol's state
(open text blocks, the current step) is rebuilt by the same stream, so a resumed client gets the chunks an
uninterrupted one got, byte for byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ag_ui.core import BaseEvent
from pydantic_ai.messages import PartDeltaEvent
from pydantic_ai.run import AgentRunResultEvent
from pydantic_ai.tools import DeferredToolRequests
from pydantic_ai.ui import UIEventStream
from pydantic_ai.ui.ag_ui import AGUIEventStream
from pydantic_ai.ui.vercel_ai import VercelAIEventStream
from pydantic_ai.ui.vercel_ai.response_types import BaseChunk, ToolApprovalRequestChunk

from ..._core.cursor import Cursor
from ..._core.entry import Entry
from ..._core.names import BEGIN, END, ERROR
from .events import EntryEvents, NativeEvent, WebCursor, ends_segment

__all__ = ["AGUI", "VERCEL_AI", "Chunk", "WebProtocol", "chunks"]

VERCEL_AI_SDK: Literal[6] = 6
"""The AI SDK version whose stream is sent: 6 has the tool approval chunks."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One protocol chunk as sent: its SSE `id` (a `WebCursor`) and `data` (the protocol's JSON)."""

    id: str
    data: str


class _Segment(Protocol):
    def stream(self, *, session_id: str, run_id: str, segment: str) -> UIEventStream[Any, Any, Any, Any]: ...


@dataclass(kw_only=True)
class _VercelAIStream(VercelAIEventStream[Any, Any]):
    """pydantic-ai's Vercel AI stream with stable ids, and approval requests for a run waiting in Redis."""

    segment: str = ""
    _made: int = 0

    def new_message_id(self) -> str:
        self._made += 1
        self.message_id = f"{self.segment}-{self._made}"
        return self.message_id

    async def handle_run_result(self, event: AgentRunResultEvent[Any]) -> AsyncIterator[BaseChunk]:
        # Our result carries no messages (the run's are in the conversation store), so no metadata chunk: only
        # the approvals a run waits on, as the adapter sends them.
        output = event.result.output
        if isinstance(output, DeferredToolRequests):
            for call in output.approvals:
                yield ToolApprovalRequestChunk(approval_id=call.tool_call_id, tool_call_id=call.tool_call_id)


@dataclass(kw_only=True)
class _AGUIStream(AGUIEventStream[Any, Any]):
    """pydantic-ai's AG-UI stream with stable ids (the few it draws at random, such as a reasoning message's, are
    renamed in the order they appear)."""

    segment: str = ""
    _made: int = 0
    _renamed: dict[str, str] = field(default_factory=dict)

    def new_message_id(self) -> str:
        self._made += 1
        self.message_id = f"{self.segment}-{self._made}"
        return self.message_id

    async def handle_event(self, event: NativeEvent) -> AsyncIterator[BaseEvent]:
        async for agui_event in super().handle_event(event):
            drawn = getattr(agui_event, "message_id", None)
            if isinstance(drawn, str) and not drawn.startswith(f"{self.segment}-"):
                renamed = self._renamed.setdefault(drawn, f"{self.segment}-r{len(self._renamed) + 1}")
                setattr(agui_event, "message_id", renamed)  # noqa: B010  # the events that have one
            yield agui_event


@dataclass(frozen=True, kw_only=True)
class WebProtocol:
    """A protocol served from the stream: how a segment's stream is made and its chunks become SSE data."""

    name: Literal["vercel-ai", "ag-ui"]
    headers: dict[str, str]

    def stream(self, *, session_id: str, run_id: str, segment: str) -> UIEventStream[Any, Any, Any, Any]:
        """The encoder of one segment: the message id is the run's (a continuation extends its message), block
        ids are the segment's (`segment` names its first entry)."""
        if self.name == "vercel-ai":
            return _VercelAIStream(
                sdk_version=VERCEL_AI_SDK, server_message_id=run_id, message_id=segment, segment=segment
            )
        agui_run = run_id if segment == run_id else f"{run_id}/{segment}"
        return _AGUIStream(thread_id=session_id, run_id=agui_run, message_id=segment, segment=segment)

    def data(self, stream: UIEventStream[Any, Any, Any, Any], chunk: Any, entry_id: str) -> str:
        """The chunk's SSE data, as the protocol's own encoder writes it (AG-UI events stamped with the entry's
        time, so a replay encodes them the same)."""
        if isinstance(chunk, BaseEvent):
            chunk.timestamp = Cursor.key_of(entry_id)[0]
        return stream.encode_event(chunk).removeprefix("data: ").rstrip("\n")


VERCEL_AI = WebProtocol(name="vercel-ai", headers={"x-vercel-ai-ui-message-stream": "v1"})
AGUI = WebProtocol(name="ag-ui", headers={})


@dataclass(kw_only=True)
class _Position:
    """Which entry the chunks coming out of the encoder belong to, and how many it has had."""

    entry: Entry
    made: int = 0
    last: Entry | None = None


async def chunks(
    entries: AsyncIterator[Entry], protocol: WebProtocol, *, session_id: str, after: WebCursor
) -> AsyncIterator[Chunk]:
    """The chunks of the run whose entries `entries` yields from its `begin`, after `after`, until the end of the
    first segment any chunk was sent of (or the run's end)."""
    run_id = ""
    while (first := await anext(entries, None)) is not None:
        if first.type == BEGIN:
            run_id = str(first.body.get("run_id") or first.id)
        position = _Position(entry=first)
        stream = protocol.stream(
            session_id=session_id, run_id=run_id, segment=run_id if first.type == BEGIN else first.id
        )
        sent = False
        async for chunk in stream.transform_stream(_events(first, entries, position, after)):
            made, position.made = position.made, position.made + 1
            if not after.has(position.entry.id, made):
                sent = True
                yield Chunk(
                    id=WebCursor.of(position.entry.id, made), data=protocol.data(stream, chunk, position.entry.id)
                )
        last = position.last
        if sent or last is None or last.type in (END, ERROR):
            return


async def _events(
    first: Entry, entries: AsyncIterator[Entry], position: _Position, after: WebCursor
) -> AsyncIterator[NativeEvent]:
    """The native events of one segment's entries, `position` following the entry they come from. Text and thinking
    deltas of entries before the cursor's are left out: none of their chunks is sent, and the parts' state the
    encoder keeps comes from their start and end events (which `EntryEvents` gives whole), so a resume into a long
    answer does not encode it all again."""
    mapper = EntryEvents()
    entry: Entry | None = first
    while entry is not None:
        if entry is not first:  # the first's count began with the chunks sent before any event (`start`)
            position.entry, position.made = entry, 0
        position.last = entry
        skipped = Cursor.key_of(entry.id) < after.entry.key
        for event in mapper.of(entry):
            if not (skipped and isinstance(event, PartDeltaEvent)):
                yield event
        if ends_segment(entry):
            return
        entry = await anext(entries, None)
