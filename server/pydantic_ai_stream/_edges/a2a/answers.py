"""A waiting run over A2A: the data part its `input-required` status carries, and the answers a follow-up message's
data part gives (docs/waiting-runs.md).

The status message's data part: `{"calls": [{"tool_call_id", "tool_name", "args", "kind"}], "deadline_ms": N}`
(`kind`: `approval`, `external` or `question`). A follow-up message names the task (`task_id`) and holds one data
part `{"answers": [...]}`, each answer one of `{"tool_call_id", "approved": true[, "override_args": {...}]}`,
`{"tool_call_id", "denied": "message"}` (or `"approved": false`), `{"tool_call_id", "value": <JSON>}`,
`{"tool_call_id", "retry": "message"}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format, struct_pb2

from ..._core.deferred import ToolAnswer

__all__ = ["ANSWERS_KEY", "input_message", "tool_answers"]

ANSWERS_KEY = "answers"
"""The key of a follow-up message's data part that holds the answers."""

_SHAPES = (
    '{"answers": [{"tool_call_id": "...", "approved": true} | {"tool_call_id": "...", "denied": "why"} | '
    '{"tool_call_id": "...", "value": ...} | {"tool_call_id": "...", "retry": "why"}]}'
)
_OUTCOMES = ("approved", "denied", "value", "retry")


def input_message(
    task_id: str, context_id: str, body: Mapping[str, Any], *, pending: Sequence[str] | None = None
) -> a2a.Message:
    """The agent's message of an `input-required` status: a line for people, and the calls as a data part (with
    `pending`: the ids of the calls still without an answer)."""
    calls: list[Mapping[str, Any]] = list(body.get("calls") or [])
    said = ", ".join(
        f"{'approval of' if call.get('kind') == 'approval' else 'a result of'} {call.get('tool_name')} "
        f"({call.get('tool_call_id')})"
        for call in calls
    )
    data: dict[str, Any] = {"calls": calls, "deadline_ms": body.get("deadline_ms", 0)}
    if pending is not None:
        data["pending"] = list(pending)
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return a2a.Message(
        message_id=uuid.uuid4().hex,
        task_id=task_id,
        context_id=context_id,
        role=a2a.ROLE_AGENT,
        parts=[
            a2a.Part(text=f"The run waits for {said}: answer with a data part {_SHAPES}"),
            a2a.Part(data=value, media_type="application/json"),
        ],
    )


def tool_answers(message: a2a.Message) -> list[ToolAnswer] | None:
    """The answers of a follow-up message (`None`: it has no data part); `InvalidParamsError` for a message that
    holds anything but one data part of the documented shape."""
    data = [part for part in message.parts if part.HasField("data")]
    if not data:
        return None
    if len(data) != 1 or len(message.parts) != 1:
        raise InvalidParamsError(f"a follow-up on a waiting task holds one data part, nothing else: {_SHAPES}")
    body = json_format.MessageToDict(data[0].data)
    answers = body.get(ANSWERS_KEY) if isinstance(body, dict) else None
    if not isinstance(answers, list) or not answers or set(body) != {ANSWERS_KEY}:
        raise InvalidParamsError(f"the data part must be {_SHAPES}")
    return [_answer(answer) for answer in answers]


def _answer(answer: Any) -> ToolAnswer:
    if not isinstance(answer, dict) or not isinstance(call_id := answer.get("tool_call_id"), str) or not call_id:
        raise InvalidParamsError(f"each answer names its call (a string tool_call_id): {_SHAPES}")
    outcomes = [key for key in _OUTCOMES if key in answer]
    extra = set(answer) - {"tool_call_id", "override_args", *_OUTCOMES}
    if len(outcomes) != 1 or extra or ("override_args" in answer and answer.get("approved") is not True):
        raise InvalidParamsError(f"the answer to {call_id[:64]!r} must be one of {_SHAPES}")
    match outcomes[0], answer[outcomes[0]]:
        case "approved", bool(approved):
            override = answer.get("override_args")
            if override is not None and not isinstance(override, dict):
                raise InvalidParamsError(f"override_args of {call_id[:64]!r} must be an object")
            return ToolAnswer(tool_call_id=call_id, approved=approved, override_args=override)
        case "denied", str(message):
            return ToolAnswer(tool_call_id=call_id, approved=False, denial_message=message)
        case "retry", str(message):
            return ToolAnswer(tool_call_id=call_id, retry=message)
        case "value", value:
            return ToolAnswer(tool_call_id=call_id, value=value)
    raise InvalidParamsError(f"the answer to {call_id[:64]!r} has a value of the wrong type: {_SHAPES}")
