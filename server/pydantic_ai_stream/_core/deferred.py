"""Runs that wait for input (no I/O): the `input_required` body of a run stopped on pydantic-ai's
`DeferredToolRequests`, the answers a caller gives (`ToolAnswer`) as stored and as `DeferredToolResults`, and the
closing of calls a waiting run left unanswered. See docs/waiting-runs.md.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied
from typing_extensions import TypedDict

__all__ = [
    "NOT_ANSWERED",
    "CallKind",
    "InputCall",
    "InputRequired",
    "InputWait",
    "Responded",
    "ToolAnswer",
    "closing_unanswered",
    "input_calls",
    "input_required",
    "unanswered",
]

CallKind = Literal["approval", "external", "question"]
"""What a deferred call waits for: a yes/no (`approval`) or a result (`external`; `question`, an answer)."""

NOT_ANSWERED = (
    "This tool call was not run: the run waiting for its approval or result was cancelled, or its wait expired."
)
"""The tool return the next run gives the model for a call its run waited on and nobody answered."""


class InputCall(TypedDict):
    """One call a waiting run waits on."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    """The arguments as the model sent them."""
    kind: CallKind


class InputRequired(TypedDict):
    """`input_required`: the run stopped for answers to `calls` (of node `idx`), until `deadline_ms` (ms since
    the epoch); written by the runtime, origin `pydantic-ai-stream`."""

    idx: int
    event: Literal["input_required"]
    calls: list[InputCall]
    deadline_ms: int


def input_calls(requests: DeferredToolRequests) -> list[InputCall]:
    """The calls of `requests`, approvals first, each with its kind."""
    return [
        {
            "tool_call_id": call.tool_call_id,
            "tool_name": call.tool_name,
            "args": call.args_as_dict(),
            "kind": requests.kind(call.tool_call_id),
        }
        for call in [*requests.approvals, *requests.calls]
    ]


def input_required(idx: int, calls: list[InputCall], deadline_ms: int) -> InputRequired:
    """The body of the `input_required` event."""
    return {"idx": idx, "event": "input_required", "calls": calls, "deadline_ms": deadline_ms}


@dataclass(frozen=True, kw_only=True)
class ToolAnswer:
    """An answer to one deferred call: an approval (`approved`, with `denial_message` or `override_args`), or
    an external call's result (`value`, or `retry`: an error the model sees as a retry prompt)."""

    tool_call_id: str
    approved: bool | None = None
    """Set for an approval; `None` for a result."""
    denial_message: str = ""
    override_args: dict[str, Any] | None = None
    value: Any = None
    retry: str | None = None

    @property
    def is_approval(self) -> bool:
        return self.approved is not None

    def stored(self) -> str:
        """The answer as kept in Redis: canonical JSON, so that a retried answer compares equal to the first."""
        body: dict[str, Any]
        if self.approved is not None:
            body = {"approved": self.approved}
            if not self.approved and self.denial_message:
                body["message"] = self.denial_message
            if self.approved and self.override_args is not None:
                body["override_args"] = self.override_args
        elif self.retry is not None:
            body = {"retry": self.retry}
        else:
            body = {"value": self.value}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, kw_only=True)
class Responded:
    """What answering a waiting run did: `continued` (every call has an answer: the run goes on), else the ids
    of the calls still `pending`."""

    continued: bool
    pending: list[str] = field(default_factory=list)


class _Stored(TypedDict, total=False):
    approved: bool
    message: str
    override_args: dict[str, Any]
    retry: str
    value: Any


@dataclass(frozen=True, kw_only=True)
class InputWait:
    """A run's wait as kept in Redis: node `idx`, how many messages the stored conversation held when the run
    stopped (`waited`: the run's messages after it are the continuation's), the calls and their answers."""

    idx: int
    waited: int
    tools: Mapping[str, str] = field(default_factory=dict)
    """The calls' tool names, by call id."""
    answers: Mapping[str, str] = field(default_factory=dict)
    """Stored answers (`ToolAnswer.stored`), by call id."""

    def results(self, *, unknown: str | None = None, rerun: Collection[str] = ()) -> DeferredToolResults:
        """The answers as pydantic-ai's `DeferredToolResults`. With `unknown` (a takeover after the worker that
        went on died), approved calls of tools not in `rerun` are answered `unknown` instead: they may have run."""
        results = DeferredToolResults()
        for call_id, stored in self.answers.items():
            answer: _Stored = json.loads(stored)
            if "approved" in answer:
                if answer["approved"] and unknown is not None and self.tools.get(call_id) not in rerun:
                    results.calls[call_id] = unknown
                elif answer["approved"]:
                    results.approvals[call_id] = ToolApproved(override_args=answer.get("override_args"))
                else:
                    results.approvals[call_id] = ToolDenied(answer.get("message") or "The tool call was denied.")
            elif "retry" in answer:
                results.calls[call_id] = ModelRetry(answer["retry"])
            else:
                results.calls[call_id] = answer.get("value")
        return results


def unanswered(messages: Sequence[ModelMessage]) -> tuple[ModelResponse | None, list[ToolCallPart]]:
    """The last response of `messages` (a stored conversation) and its calls that have no return after it: the
    calls a run stopped on to wait for input."""
    index = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], ModelResponse)), None)
    if index is None:
        return None, []
    response = messages[index]
    assert isinstance(response, ModelResponse)
    answered = {
        part.tool_call_id
        for message in messages[index + 1 :]
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart | RetryPromptPart)
    }
    return response, [call for call in response.tool_calls if call.tool_call_id not in answered]


def closing_unanswered(messages: Sequence[ModelMessage]) -> list[ModelMessage]:
    """The request that answers the calls `messages` (a stored conversation) ends on as not run
    (`outcome="denied"`), or `[]` if it ends on none: a run that waited on them was cancelled or its wait
    expired, and a new prompt cannot follow unanswered calls."""
    response, calls = unanswered(messages)
    if response is None or not calls:
        return []
    returns = [
        ToolReturnPart(call.tool_name, NOT_ANSWERED, tool_call_id=call.tool_call_id, outcome="denied") for call in calls
    ]
    return [ModelRequest(parts=returns, run_id=response.run_id)]
