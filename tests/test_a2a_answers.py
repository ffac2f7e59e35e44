"""`answers`: a follow-up message's data part read as the library's `ToolAnswer`s, and bad ones refused."""

from __future__ import annotations

from typing import Any

import pytest
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError
from google.protobuf import json_format, struct_pb2

from pydantic_ai_stream import ToolAnswer
from pydantic_ai_stream._edges.a2a.answers import tool_answers


def _message(data: Any, *, text: str | None = None) -> a2a.Message:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    message = a2a.Message(message_id="m", role=a2a.ROLE_USER, task_id="r1", parts=[a2a.Part(data=value)])
    if text is not None:
        message.parts.append(a2a.Part(text=text))
    return message


def test_each_kind_of_answer() -> None:
    answers = [
        {"tool_call_id": "a", "approved": True},
        {"tool_call_id": "b", "approved": True, "override_args": {"name": "dev"}},
        {"tool_call_id": "c", "denied": "not on Fridays"},
        {"tool_call_id": "d", "approved": False},
        {"tool_call_id": "e", "value": {"ack": True}},
        {"tool_call_id": "f", "retry": "pager down"},
    ]
    assert tool_answers(_message({"answers": answers})) == [
        ToolAnswer(tool_call_id="a", approved=True),
        ToolAnswer(tool_call_id="b", approved=True, override_args={"name": "dev"}),
        ToolAnswer(tool_call_id="c", approved=False, denial_message="not on Fridays"),
        ToolAnswer(tool_call_id="d", approved=False),
        ToolAnswer(tool_call_id="e", value={"ack": True}),
        ToolAnswer(tool_call_id="f", retry="pager down"),
    ]


def test_a_text_only_message_has_no_answers() -> None:
    assert tool_answers(a2a.Message(message_id="m", parts=[a2a.Part(text="yes")])) is None


@pytest.mark.parametrize(
    "data",
    [
        {"answers": []},
        {"answers": [{"tool_call_id": "a", "approved": True}], "more": 1},
        [{"tool_call_id": "a", "approved": True}],
        {"answers": [{"approved": True}]},
        {"answers": [{"tool_call_id": "", "approved": True}]},
        {"answers": [{"tool_call_id": "a"}]},
        {"answers": [{"tool_call_id": "a", "approved": "yes"}]},
        {"answers": [{"tool_call_id": "a", "approved": True, "retry": "x"}]},
        {"answers": [{"tool_call_id": "a", "denied": True}]},
        {"answers": [{"tool_call_id": "a", "retry": 3}]},
        {"answers": [{"tool_call_id": "a", "approved": False, "override_args": {}}]},
        {"answers": [{"tool_call_id": "a", "approved": True, "override_args": [1]}]},
        {"answers": [{"tool_call_id": "a", "value": 1, "extra": 2}]},
    ],
)
def test_bad_answers_are_invalid_params(data: Any) -> None:
    with pytest.raises(InvalidParamsError):
        tool_answers(_message(data))


def test_a_data_part_with_anything_beside_it_is_refused() -> None:
    with pytest.raises(InvalidParamsError, match="one data part, nothing else"):
        tool_answers(_message({"answers": [{"tool_call_id": "a", "approved": True}]}, text="and also"))
