"""Stream entries as gRPC `Event`s, and the cache that lets a session's listeners share each conversion."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

from pydantic import Field, OnErrorOmit, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from ..._core.deferred import InputCall
from ..._core.entry import Entry
from ..._core.events import EventBodyTypeAdapter, Index
from ..._core.names import BEGIN, END, ERROR, EVENT, INFO
from ...v1 import stream_pb2 as pb

__all__ = ["HEARTBEAT", "ListenResponseCache", "batch_response", "event_to_proto"]

_EVENT_TYPES = {BEGIN: pb.EVENT_TYPE_BEGIN, EVENT: pb.EVENT_TYPE_EVENT, ERROR: pb.EVENT_TYPE_ERROR,
                INFO: pb.EVENT_TYPE_INFO, END: pb.EVENT_TYPE_END}  # fmt: skip
_EVENT_KINDS = {"llm-begin": pb.EVENT_KIND_LLM_BEGIN, "llm-end": pb.EVENT_KIND_LLM_END,
                "part_start": pb.EVENT_KIND_PART_START, "part_delta": pb.EVENT_KIND_PART_DELTA,
                "answer": pb.EVENT_KIND_ANSWER, "resumed": pb.EVENT_KIND_RESUMED,
                "input_required": pb.EVENT_KIND_INPUT_REQUIRED}  # fmt: skip
_CALL_KINDS = {"approval": pb.DEFERRED_CALL_KIND_APPROVAL, "external": pb.DEFERRED_CALL_KIND_EXTERNAL,
               "question": pb.DEFERRED_CALL_KIND_QUESTION}  # fmt: skip
_PART_KINDS = {"text": pb.PART_KIND_TEXT, "thinking": pb.PART_KIND_THINKING, "tool-call": pb.PART_KIND_TOOL_CALL,
               "tool-return": pb.PART_KIND_TOOL_RETURN}  # fmt: skip
_OUTCOMES = {"failed": pb.TOOL_OUTCOME_FAILED, "denied": pb.TOOL_OUTCOME_DENIED,
             "interrupted": pb.TOOL_OUTCOME_INTERRUPTED, "retried": pb.TOOL_OUTCOME_RETRIED}  # fmt: skip


@with_config(strict=True)
class _EventFields(TypedDict, total=False):
    """The fields of an `event` body that `Event` carries, of the JSON types the runtime writes.

    Every `EventBody` is one. Application code may write `event` entries too: parsed as this, a field
    of another type is left out (it stays in `body_json`) and the others are still read.
    """

    idx: OnErrorOmit[Index]
    event: OnErrorOmit[str]
    event_idx: OnErrorOmit[Index]
    part_kind: OnErrorOmit[str]
    part_delta_kind: OnErrorOmit[str]
    outcome: OnErrorOmit[str]
    content: Any
    content_delta: OnErrorOmit[str]
    tool_name: OnErrorOmit[str | None]
    tool_call_id: OnErrorOmit[str | None]
    args: OnErrorOmit[dict[str, Any]]
    attempt: OnErrorOmit[Index]
    calls: OnErrorOmit[list[InputCall]]
    deadline_ms: OnErrorOmit[Annotated[int, Field(ge=0, lt=1 << 64)]]


_EVENT_FIELDS = TypeAdapter(_EventFields)

_EVENT_BODY = EventBodyTypeAdapter.validator
"""The adapter's own validator: its Python wrapper would cost as much again as the validation, per entry."""


def event_to_proto(entry: Entry) -> pb.Event:
    """A stream entry as a typed `Event`; the body is also kept as its JSON."""
    message = pb.Event(
        id=entry.id,
        type=_EVENT_TYPES.get(entry.type, pb.EVENT_TYPE_CUSTOM),
        type_name=entry.type,
        origin=entry.origin,
        body_json=entry.body_json,
    )
    if entry.type == EVENT and isinstance(entry.body, dict):
        _set_event_fields(message, _event_fields(entry.body))
    return message


def _event_fields(body: dict[str, Any]) -> _EventFields:
    try:
        fields = _EVENT_BODY.validate_python(body)
    except ValidationError:
        pass
    else:
        if len(fields) == len(body):  # the event's own fields only: none was dropped
            return cast(_EventFields, fields)  # an `EventBody`'s fields are of their `_EventFields` types
    return _EVENT_FIELDS.validate_python(body)


def _set_event_fields(message: pb.Event, body: _EventFields) -> None:
    message.kind = _EVENT_KINDS.get(body.get("event", ""), pb.EVENT_KIND_UNSPECIFIED)
    if "idx" in body:
        message.idx = body["idx"]
    if "event_idx" in body:
        message.event_idx = body["event_idx"]
    if part_kind := body.get("part_kind"):
        message.part_kind = _PART_KINDS.get(part_kind, pb.PART_KIND_OTHER)
        message.part_kind_name = part_kind
    if delta_kind := body.get("part_delta_kind"):
        message.part_delta_kind = _PART_KINDS.get(delta_kind, pb.PART_KIND_OTHER)
    if outcome := body.get("outcome"):
        message.outcome = _OUTCOMES.get(outcome, pb.TOOL_OUTCOME_OTHER)
    if "content" in body:
        content = body["content"]
        message.content = content if isinstance(content, str) else json.dumps(content)
    if "content_delta" in body:
        message.content_delta = body["content_delta"]
    if (tool_name := body.get("tool_name")) is not None:
        message.tool_name = tool_name
    if (tool_call_id := body.get("tool_call_id")) is not None:
        message.tool_call_id = tool_call_id
    if "args" in body:
        message.args.update(body["args"])
    if "attempt" in body:
        message.attempt = body["attempt"]
    for call in body.get("calls", ()):
        added = message.calls.add(
            tool_call_id=call["tool_call_id"],
            tool_name=call["tool_name"],
            kind=_CALL_KINDS.get(call["kind"], pb.DEFERRED_CALL_KIND_UNSPECIFIED),
        )
        added.args.update(call["args"])
    if "deadline_ms" in body:
        message.deadline_unix_ms = body["deadline_ms"]


HEARTBEAT = pb.ListenResponse(heartbeat=pb.Heartbeat()).SerializeToString()
"""A serialized `ListenResponse` carrying a heartbeat."""


def batch_response(items: list[bytes]) -> bytes:
    """A serialized `ListenResponse` whose `events` carry the events of `items` (serialized `ListenResponse`s
    with one `event` each), built from their bytes: an `event` (field 1 of `ListenResponse`) and an event
    of an `EventBatch` (field 1 of it, repeated) are the same bytes on the wire."""
    events = b"".join(items)
    return _EVENTS_TAG + _varint(len(events)) + events


_EVENTS_TAG = bytes([3 << 3 | 2])
"""`ListenResponse.events`: field 3, length-delimited."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(slots=True)
class _Converted:
    response: pb.ListenResponse
    serialized: bytes | None = None


@dataclass(kw_only=True)
class ListenResponseCache:
    """The `ListenResponse` of recent entries, so the listeners of one session share one conversion (and one
    serialization).

    Bounded in bytes, not entries: an entry of more than an eighth of the budget is converted for
    each listener instead of being kept.
    """

    max_bytes: int = 16 << 20
    _responses: dict[tuple[str, str], tuple[_Converted, int]] = field(default_factory=dict)
    _bytes: int = 0

    def response(self, key: str, entry: Entry) -> pb.ListenResponse:
        """The response carrying `entry` of stream `key`, converted once while it is cached."""
        return self._converted(key, entry).response

    def serialized(self, key: str, entry: Entry) -> bytes:
        """`response(key, entry)` serialized, once while it is cached."""
        converted = self._converted(key, entry)
        if converted.serialized is None:
            converted.serialized = converted.response.SerializeToString()
        return converted.serialized

    def _converted(self, key: str, entry: Entry) -> _Converted:
        cached = self._responses.get((key, entry.id))
        if cached is not None:
            return cached[0]
        converted = _Converted(pb.ListenResponse(event=event_to_proto(entry)))
        size = len(entry.body_json) * 3 + 256  # the JSON, plus its typed fields, the message and its bytes
        if size <= self.max_bytes // 8:
            while self._responses and self._bytes + size > self.max_bytes:
                _, evicted = self._responses.pop(next(iter(self._responses)))  # the oldest
                self._bytes -= evicted
            self._responses[(key, entry.id)] = (converted, size)
            self._bytes += size
        return converted

    @property
    def size_bytes(self) -> int:
        """Bytes the cached responses hold, about."""
        return self._bytes
