"""What a Vercel AI chat request or an AG-UI `RunAgentInput` asks for: a new run's prompt, or answers to the calls
a waiting run waits on (approvals, external tools' results), as `Respond` takes them. Bodies are parsed by
pydantic-ai's adapters (`build_run_input`); AG-UI's resume entries become approvals as its adapter maps them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ag_ui.core import RunAgentInput
from pydantic import ValidationError
from pydantic_ai import Agent
from pydantic_ai.exceptions import UserError
from pydantic_ai.tools import DeferredToolResults, ToolApproved, ToolDenied
from pydantic_ai.ui.ag_ui import AGUIAdapter
from pydantic_ai.ui.vercel_ai import VercelAIAdapter
from pydantic_ai.ui.vercel_ai.request_types import RequestData, TextUIPart, UIMessage

from ..._core.deferred import InputCall, ToolAnswer
from ..._core.errors import InvalidRequestError

__all__ = ["Turn", "agui_request", "agui_turn", "vercel_request", "vercel_turn"]


@dataclass(frozen=True, kw_only=True)
class Turn:
    """A request's session and what it asks: a run of `prompt`, or `answers` for the waiting run."""

    session_id: str
    prompt: str = ""
    answers: list[ToolAnswer] | None = None
    run_id: str | None = None
    """The run id the client chose (AG-UI's `runId`): a retried request gets the run it started."""


def _first_error(e: ValidationError) -> str:
    error = e.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def vercel_request(body: bytes) -> RequestData:
    """An AI SDK chat request, parsed by pydantic-ai's adapter (`InvalidRequestError` if it is not one)."""
    try:
        return VercelAIAdapter.build_run_input(body)
    except ValidationError as e:
        raise InvalidRequestError(f"not an AI SDK chat request: {_first_error(e)}") from None


def vercel_turn(request: RequestData, waiting: Sequence[InputCall]) -> Turn:
    """The turn of an AI SDK chat request: its last message's text, or (an assistant message) its approval
    responses and tool outputs for the `waiting` calls."""
    if not request.messages:
        raise InvalidRequestError("the chat request has no messages")
    last = request.messages[-1]
    if last.role == "assistant":
        return Turn(session_id=request.id, answers=_vercel_answers(last, waiting))
    prompt = "\n".join(part.text for part in last.parts if isinstance(part, TextUIPart))
    return Turn(session_id=request.id, prompt=prompt)


def _vercel_answers(message: UIMessage, waiting: Sequence[InputCall]) -> list[ToolAnswer]:
    kinds = {call["tool_call_id"]: call["kind"] for call in waiting}
    answers: list[ToolAnswer] = []
    for part in message.parts:
        call_id: Any = getattr(part, "tool_call_id", None)
        kind = kinds.get(call_id) if isinstance(call_id, str) else None
        if kind is None:
            continue
        approval, state = getattr(part, "approval", None), getattr(part, "state", None)
        approved = getattr(approval, "approved", None)
        if kind == "approval" and isinstance(approved, bool):
            reason = getattr(approval, "reason", None) or ""
            answers.append(ToolAnswer(tool_call_id=call_id, approved=approved, denial_message=reason))
        elif kind != "approval" and state == "output-available":
            answers.append(ToolAnswer(tool_call_id=call_id, value=getattr(part, "output", None)))
        elif kind != "approval" and state == "output-error":
            answers.append(ToolAnswer(tool_call_id=call_id, retry=str(getattr(part, "error_text", "") or "failed")))
    if waiting and not answers:
        raise InvalidRequestError("the last message is the assistant's but answers none of the calls the run waits on")
    return answers


def agui_request(body: bytes) -> RunAgentInput:
    """An AG-UI `RunAgentInput`, parsed by pydantic-ai's adapter (`InvalidRequestError` if it is not one)."""
    try:
        return AGUIAdapter.build_run_input(body)
    except ValidationError as e:
        raise InvalidRequestError(f"not an AG-UI RunAgentInput: {_first_error(e)}") from None


def agui_turn(run_input: RunAgentInput, waiting: Sequence[InputCall]) -> Turn:
    """The turn of an AG-UI `RunAgentInput`: its last user message, or its `resume` entries (approvals, as
    pydantic-ai's adapter reads them) and tool messages (results of the `waiting` external calls)."""
    external = {call["tool_call_id"] for call in waiting if call["kind"] != "approval"}
    answers: list[ToolAnswer] = []
    if run_input.resume:
        try:
            results = AGUIAdapter(agent=Agent(), run_input=run_input).deferred_tool_results
        except UserError as e:
            raise InvalidRequestError(f"resume: {e}") from None
        answers += _approvals(results)
    for message in run_input.messages:
        call_id = getattr(message, "tool_call_id", None)
        if message.role == "tool" and call_id in external:
            answers.append(ToolAnswer(tool_call_id=call_id, value=_json_or_text(str(message.content))))
    if answers:
        return Turn(session_id=run_input.thread_id, answers=answers, run_id=run_input.run_id or None)
    users = [message for message in run_input.messages if message.role == "user"]
    if not users:
        raise InvalidRequestError("RunAgentInput has no user message and no resume entries")
    content = users[-1].content
    prompt = content if isinstance(content, str) else "\n".join(getattr(c, "text", "") for c in content)
    return Turn(session_id=run_input.thread_id, prompt=prompt, run_id=run_input.run_id or None)


def _approvals(results: DeferredToolResults | None) -> list[ToolAnswer]:
    answers: list[ToolAnswer] = []
    for call_id, result in (results.approvals if results is not None else {}).items():
        if isinstance(result, ToolApproved):
            answers.append(ToolAnswer(tool_call_id=call_id, approved=True, override_args=result.override_args))
        elif isinstance(result, ToolDenied):
            answers.append(ToolAnswer(tool_call_id=call_id, approved=False, denial_message=result.message))
        else:
            answers.append(ToolAnswer(tool_call_id=call_id, approved=bool(result)))
    return answers


def _json_or_text(content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content
