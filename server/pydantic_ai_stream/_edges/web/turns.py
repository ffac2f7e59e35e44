"""What a Vercel AI chat request or an AG-UI `RunAgentInput` asks for: a new run's prompt, or answers to the calls
a waiting run waits on (approvals, external tools' results), as `Respond` takes them. Bodies are parsed by
pydantic-ai's adapters (`build_run_input`); AG-UI's resume entries become approvals as its adapter maps them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import RunAgentInput
from pydantic import ValidationError
from pydantic_ai import Agent
from pydantic_ai.exceptions import UserError
from pydantic_ai.tools import DeferredToolResults, ToolApproved, ToolDenied
from pydantic_ai.ui.ag_ui import AGUIAdapter
from pydantic_ai.ui.vercel_ai import VercelAIAdapter
from pydantic_ai.ui.vercel_ai.request_types import FileUIPart, RequestData, TextUIPart, UIMessage

from ..._core.deferred import InputCall, ToolAnswer
from ..._core.errors import InvalidRequestError
from ..._core.inputs import Attachment
from ..._core.keys import excerpt

__all__ = ["Turn", "agui_request", "agui_turn", "vercel_request", "vercel_turn"]


@dataclass(frozen=True, kw_only=True)
class Turn:
    """A request's session and what it asks: a run of `prompt`, or `answers` for the waiting run."""

    session_id: str
    prompt: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    """The prompt's files (data URLs or http(s) URLs), checked by admission against the bounds."""
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
    files = [_attachment(f.url, f.media_type, f.filename or "") for f in last.parts if isinstance(f, FileUIPart)]
    return Turn(session_id=request.id, prompt=prompt, attachments=files)


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
    if isinstance(content, str):
        return Turn(session_id=run_input.thread_id, prompt=content, run_id=run_input.run_id or None)
    prompt = "\n".join(text for c in content if isinstance(text := getattr(c, "text", None), str))
    files = []
    for c in content:
        source = getattr(c, "source", None)
        if source is not None:
            kind = getattr(source, "type", "")
            url = f"data:{source.mime_type};base64,{source.value}" if kind == "data" else str(source.value)
            files.append(_attachment(url, source.mime_type or ""))
    return Turn(session_id=run_input.thread_id, prompt=prompt, attachments=files, run_id=run_input.run_id or None)


def _attachment(url: str, media_type: str, name: str = "") -> Attachment:
    """A file given by URL: a data URL's bytes, or the URL itself (`InvalidRequestError` for a bad data URL)."""
    if not url.startswith("data:"):
        return Attachment(url=url, media_type=media_type, name=name)
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InvalidRequestError(f"file {excerpt(name or url)}: a data URL must be base64 ('data:<type>;base64,...')")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise InvalidRequestError(f"file {excerpt(name or url)}: its data URL is not valid base64") from None
    return Attachment(data=data, media_type=media_type or header[5:].removesuffix(";base64"), name=name)


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
