"""Pure mapping from pydantic-ai nodes, events and messages to stream entry bodies (no I/O).

A run is a sequence of nodes, one per model request, numbered by `idx` from 0. A node's body events:
`llm-begin`; `part_start` (text/thinking with their first `content`, a tool call with its complete
`args` once the call has streamed in full); `part_delta` (`content_delta`); `answer` when the output
starts; `llm-end`; then `part_start` with `part_kind` `tool-return` (or `retry-prompt`) as each tool
the node called finishes. `nodes_from_msgs` rebuilds the same structure from stored messages.

The bodies are typed dicts (`EventBody`, one `TypedDict` per `event`): as written, they are the JSON the
stream holds, and `EventBodyTypeAdapter` parses that JSON back into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter
from pydantic_ai.messages import (
    BaseToolCallPart,
    BaseToolReturnPart,
    FinalResultEvent,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    NativeToolReturnPart,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    RetryPromptPart,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolResultEvent,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_core import to_jsonable_python
from typing_extensions import TypedDict

from .deferred import InputRequired

__all__ = [
    "Answer",
    "EventBody",
    "EventBodyTypeAdapter",
    "EventMapper",
    "Index",
    "NodeBegin",
    "NodeEnd",
    "PartDelta",
    "PartFields",
    "PartStart",
    "Resumed",
    "StoredNode",
    "ToolOutcome",
    "nodes_from_msgs",
    "part_fields",
    "request_part_fields",
]

Index = Annotated[int, Field(ge=0, lt=1 << 32)]
"""A node's or a part's index, from 0 (below 2**32: the proto holds it as a uint32)."""

ToolOutcome = Literal["failed", "denied", "interrupted", "retried"]
"""How a tool return that did not succeed ended (pydantic-ai's outcomes other than `success`)."""


class NodeBegin(TypedDict):
    """`llm-begin`: a model request node starts."""

    idx: Index
    event: Literal["llm-begin"]


class NodeEnd(TypedDict):
    """`llm-end`: the node's model response has streamed in full."""

    idx: Index
    event: Literal["llm-end"]


class PartFields(TypedDict):
    """A part as bodies describe it: its kind and, by kind, its content or its tool call or return."""

    event_idx: NotRequired[Index]
    """The part's index in its model response; absent for request parts (prompts, tool returns)."""
    part_kind: str
    """pydantic-ai's `part_kind`: `text`, `thinking`, `tool-call`, `tool-return`, `user-prompt`, ..."""
    tool_name: NotRequired[str | None]
    """Tool calls and returns; `None` only for a stored retry prompt that answers no tool."""
    tool_call_id: NotRequired[str]
    content: NotRequired[Any]
    """Text and thinking: the content so far; tool returns and prompts: their JSON value."""
    args: NotRequired[dict[str, Any]]
    """Tool calls: the complete arguments."""
    outcome: NotRequired[ToolOutcome]
    """Tool returns that did not succeed."""


class PartStart(PartFields):
    """`part_start`: a text or thinking part starts, or a tool call or return arrives complete."""

    idx: Index
    event: Literal["part_start"]


class PartDelta(TypedDict):
    """`part_delta`: text or thinking grows by `content_delta`."""

    idx: Index
    event: Literal["part_delta"]
    event_idx: Index
    part_kind: Literal["text", "thinking"]
    part_delta_kind: Literal["text", "thinking"]
    content_delta: str


class Answer(TypedDict):
    """`answer`: the run's output starts (through the output tool `tool_name`, if any)."""

    idx: Index
    event: Literal["answer"]
    tool_name: NotRequired[str]
    tool_call_id: NotRequired[str | None]


class Resumed(TypedDict):
    """`resumed`: the run's worker died and another goes on as attempt `attempt` from node `idx`; the
    events of that node and after that came before this one are superseded (written by the runtime,
    origin `pydantic-ai-stream`)."""

    idx: Index
    event: Literal["resumed"]
    attempt: int


EventBody = Annotated[
    NodeBegin | NodeEnd | PartStart | PartDelta | Answer | Resumed | InputRequired, Field(discriminator="event")
]
"""The body of an `event` entry the runtime writes, told apart by its `event`."""

EventBodyTypeAdapter: TypeAdapter[EventBody] = TypeAdapter(EventBody, config=ConfigDict(strict=True))
"""Parses and dumps `event` bodies; strict: a field of another JSON type than the runtime writes fails."""


class StoredNode(TypedDict):
    """One node of a stored conversation (`nodes_from_msgs`): its model response and the request parts around it."""

    idx: int
    model_name: str | None
    timestamp: str | None
    """The response's time, ISO 8601; `None` for prompts no response answered yet."""
    parts: list[PartFields]


def part_fields(part: ModelResponsePart) -> PartFields:
    """The body fields describing a complete model response part (`part_kind`, `content`, tool fields)."""
    fields: PartFields = {"part_kind": part.part_kind}
    if isinstance(part, BaseToolCallPart):
        fields |= {"tool_name": part.tool_name, "tool_call_id": part.tool_call_id, "args": part.args_as_dict()}
    elif isinstance(part, BaseToolReturnPart):
        fields |= _tool_return_fields(part)
    elif isinstance(part, TextPart | ThinkingPart):
        fields["content"] = part.content
    return fields


def request_part_fields(part: object) -> PartFields | None:
    """Body fields for the request parts a user sees (prompts, tool returns, retries); `None` for the rest."""
    if isinstance(part, ToolReturnPart | NativeToolReturnPart):
        return _tool_return_fields(part)
    if isinstance(part, RetryPromptPart):
        return {
            "part_kind": part.part_kind,
            "tool_name": part.tool_name,
            "tool_call_id": part.tool_call_id,
            "content": part.model_response(),
        }
    if isinstance(part, UserPromptPart):
        return {"part_kind": part.part_kind, "content": to_jsonable_python(part.content, bytes_mode="base64")}
    return None


def _tool_return_fields(part: ToolReturnPart | NativeToolReturnPart) -> PartFields:
    fields: PartFields = {
        "part_kind": part.part_kind,
        "tool_name": part.tool_name,
        "tool_call_id": part.tool_call_id,
        "content": to_jsonable_python(part.content, fallback=str, bytes_mode="base64"),
    }
    if part.outcome != "success":
        fields["outcome"] = part.outcome  # failed, denied, interrupted or retried
    return fields


@dataclass(kw_only=True)
class EventMapper:
    """Turns one run's node boundaries and pydantic-ai events into stream bodies, in order."""

    idx: int = -1
    """Index of the current node; -1 before the first model request."""

    def node_begin(self) -> NodeBegin:
        """Body of `llm-begin`: a model request node starts."""
        self.idx += 1
        return {"idx": self.idx, "event": "llm-begin"}

    def node_end(self) -> NodeEnd:
        """Body of `llm-end`: the model's response has streamed in full."""
        return {"idx": self.idx, "event": "llm-end"}

    def replay(self, idx: int, response: ModelResponse, answer: ModelRequest | None = None) -> list[EventBody]:
        """The events of node `idx` whose response is complete (a resumed run redoes the node from its tool
        calls): `llm-begin`, each part complete as a `part_start`, `llm-end`; then the tool returns of
        `answer`, the request that answered the response, if it is known."""
        self.idx = idx
        parts: list[EventBody] = [
            {"idx": idx, "event": "part_start", "event_idx": i, **part_fields(part)}
            for i, part in enumerate(response.parts)
        ]
        returns: list[EventBody] = []
        for part in answer.parts if answer is not None else ():
            fields = request_part_fields(part)
            if fields is not None and fields["part_kind"] != "user-prompt":
                returns.append({"idx": idx, "event": "part_start", **fields})
        return [{"idx": idx, "event": "llm-begin"}, *parts, self.node_end(), *returns]

    def event(self, event: object) -> EventBody | None:
        """The body for one pydantic-ai stream event, or `None` for events that carry nothing to show."""
        idx = max(self.idx, 0)
        if isinstance(event, PartStartEvent):
            part = event.part
            if isinstance(part, BaseToolCallPart):
                # Tool-call args stream in pieces; the call is announced once, complete, at its end.
                return None
            return {"idx": idx, "event": "part_start", "event_idx": event.index, **part_fields(part)}
        if isinstance(event, PartDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextPartDelta | ThinkingPartDelta) and delta.content_delta:
                return {
                    "idx": idx,
                    "event": "part_delta",
                    "event_idx": event.index,
                    "part_kind": "text" if isinstance(delta, TextPartDelta) else "thinking",
                    "part_delta_kind": delta.part_delta_kind,
                    "content_delta": delta.content_delta,
                }
            return None
        if isinstance(event, PartEndEvent):
            if isinstance(event.part, BaseToolCallPart):
                return {"idx": idx, "event": "part_start", "event_idx": event.index, **part_fields(event.part)}
            return None
        if isinstance(event, FinalResultEvent):
            answer: Answer = {"idx": idx, "event": "answer"}
            if event.tool_name is not None:
                answer |= {"tool_name": event.tool_name, "tool_call_id": event.tool_call_id}
            return answer
        if isinstance(event, ToolResultEvent):
            # Function and output tools alike: the return reaches listeners as soon as the tool finishes.
            fields = request_part_fields(event.part)
            return None if fields is None else {"idx": idx, "event": "part_start", **fields}
        return None


def nodes_from_msgs(msgs: Sequence[ModelMessage] | Sequence[dict[str, Any]] | bytes | str) -> list[StoredNode]:
    """Rebuild the node/part structure of a stored conversation, shaped like the live events.

    Node `idx` holds the user prompt that started it (if any), the response's parts (each with its
    `event_idx`) and the tool returns answering its calls. Accepts messages, their JSON, or its parsed form.
    """
    messages = _as_messages(msgs)
    nodes: list[StoredNode] = []
    pending: list[PartFields] = []  # request parts that precede the next response (prompts, retries)
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                fields = request_part_fields(part)
                if fields is None:
                    continue
                answers_previous = nodes and fields["part_kind"] != "user-prompt"
                (nodes[-1]["parts"] if answers_previous else pending).append(fields)
        elif isinstance(message, ModelResponse):
            parts: list[PartFields] = [{"event_idx": i, **part_fields(p)} for i, p in enumerate(message.parts)]
            nodes.append(
                {
                    "idx": len(nodes),
                    "model_name": message.model_name,
                    "timestamp": message.timestamp.isoformat(),
                    "parts": [*pending, *parts],
                }
            )
            pending = []
    if pending:
        nodes.append({"idx": len(nodes), "model_name": None, "timestamp": None, "parts": pending})
    return nodes


def _as_messages(msgs: Sequence[ModelMessage] | Sequence[dict[str, Any]] | bytes | str) -> Iterable[ModelMessage]:
    if isinstance(msgs, bytes | str):
        return ModelMessagesTypeAdapter.validate_json(msgs)
    if msgs and isinstance(msgs[0], dict):
        return ModelMessagesTypeAdapter.validate_python(msgs)
    return msgs  # type: ignore[return-value]
