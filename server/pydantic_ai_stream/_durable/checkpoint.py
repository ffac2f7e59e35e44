"""How a durable run goes on after its worker died: from its last checkpoint, by the tool rule (no I/O).

A durable run is checkpointed before each model request it makes after its first (its history then ends
in the previous node's tool returns) and after each model response that calls tools (its history ends in
those calls, about to run). A resumed run goes on from the last one with the public pydantic-ai API,
`agent.iter(None, message_history=...)`. A checkpoint taken after a response means the crash came while
its tool calls ran: their outcome is unknown. A call of a tool marked safe to retry runs again; any other
gets a tool return saying its outcome is unknown, and the model decides what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolReturnPart
from pydantic_ai.tools import DeferredToolResults
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset

from .._core.messages import encode_messages

__all__ = [
    "RETRY_SAFE",
    "UNKNOWN_OUTCOME",
    "Checkpoint",
    "approval_tools",
    "encode_messages",
    "retry_safe_tools",
    "saved_by",
    "saved_nodes",
    "without_run",
]

RETRY_SAFE = "retry_safe"
"""The tool metadata key that marks a tool safe to run again after a crash left a call of it with an unknown
outcome: `@agent.tool(metadata={"retry_safe": True})`. Mark only tools whose repeated call does no harm
(reads, idempotent writes)."""

UNKNOWN_OUTCOME = (
    "The outcome of this tool call is unknown: the process running it stopped before it reported back. "
    "It was not run again, because it is not marked safe to retry; it may or may not have taken effect."
)
"""The tool return a resumed run gives the model for a call that may have run and is not safe to retry."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a durable run resumes: node `idx`, with the run's `messages` so far (after its session's history)."""

    idx: int
    messages: list[ModelMessage]

    @property
    def interrupted(self) -> ModelResponse | None:
        """The response whose tool calls were running when the run stopped (node `idx`'s, redone from its
        tool calls), or `None` when the run resumes with a model request."""
        last = self.messages[-1] if self.messages else None
        return last if isinstance(last, ModelResponse) and last.tool_calls else None

    def closed(self) -> list[ModelMessage]:
        """The messages, the interrupted calls (if any) answered with `UNKNOWN_OUTCOME`: a run's progress kept
        when it ends here instead of resuming (it was cancelled while its worker was gone)."""
        response = self.interrupted
        if response is None:
            return self.messages
        returns = [
            ToolReturnPart(call.tool_name, UNKNOWN_OUTCOME, tool_call_id=call.tool_call_id, outcome="interrupted")
            for call in response.tool_calls
        ]
        return [*self.messages, ModelRequest(parts=returns, run_id=response.run_id)]

    def tool_results(self, agent: AbstractAgent[Any, Any]) -> DeferredToolResults | None:
        """What a resumed run does with the interrupted calls: run again those of tools safe to retry (and of
        output tools, which the run ends with), answer the others with `UNKNOWN_OUTCOME`. When every call is of
        a tool that requires approval, none can have run: `None`, and pydantic-ai asks for the approvals again
        (it takes results for all deferred calls or none)."""
        response = self.interrupted
        if response is None:
            return None
        approval = approval_tools(agent)
        if all(call.tool_name in approval for call in response.tool_calls):
            return None
        rerun = retry_safe_tools(agent) | _output_tools(agent)
        results = DeferredToolResults()
        for call in response.tool_calls:
            if call.tool_name in rerun:
                results.approvals[call.tool_call_id] = True
            else:
                results.calls[call.tool_call_id] = UNKNOWN_OUTCOME
        return results


def without_run(messages: Sequence[ModelMessage], run_id: str) -> list[ModelMessage]:
    """`messages` (a session's stored conversation) without those of the run `run_id` (of any attempt or part):
    a run rolled back while it waited for input, whose messages were saved when it began to wait."""
    attempt = f"{run_id}:"
    return [m for m in messages if not (m.run_id == run_id or (m.run_id or "").startswith(attempt))]


def saved_by(messages: Sequence[ModelMessage], run_id: str) -> bool:
    """Whether `messages` (a session's stored conversation) hold messages of the run `run_id`, of any
    attempt: its worker saved the conversation and died before the run's `end`."""
    attempt = f"{run_id}:"
    return any(m.run_id == run_id or (m.run_id or "").startswith(attempt) for m in messages)


def saved_nodes(messages: Sequence[ModelMessage], run_id: str) -> list[tuple[ModelResponse, ModelRequest | None]]:
    """The nodes of the run `run_id` (of any attempt) in a stored conversation, in order: each response with
    the request that answered it (its tool returns), `None` for the last."""
    attempt = f"{run_id}:"
    own = [m for m in messages if m.run_id == run_id or (m.run_id or "").startswith(attempt)]
    return [
        (m, next((a for a in own[i + 1 : i + 2] if isinstance(a, ModelRequest)), None))
        for i, m in enumerate(own)
        if isinstance(m, ModelResponse)
    ]


def approval_tools(agent: AbstractAgent[Any, Any]) -> set[str]:
    """The names of the agent's function tools that require approval (`requires_approval=True`): a call of one
    never runs before it is approved."""
    tools: set[str] = set()

    def visit(toolset: AbstractToolset[Any]) -> None:
        if isinstance(toolset, FunctionToolset):
            tools.update(name for name, tool in toolset.tools.items() if tool.requires_approval)

    for toolset in agent.toolsets:
        toolset.apply(visit)
    return tools


def retry_safe_tools(agent: AbstractAgent[Any, Any]) -> set[str]:
    """The names of the agent's tools marked safe to retry (`RETRY_SAFE` in their metadata)."""
    return {name for name, metadata in _function_tools(agent).items() if metadata.get(RETRY_SAFE) is True}


def _function_tools(agent: AbstractAgent[Any, Any]) -> dict[str, dict[str, Any]]:
    """The agent's function tools (those registered on it or in its function toolsets), by name, with their
    metadata. Tools of other toolsets (MCP servers, ...) count as not safe to retry."""
    tools: dict[str, dict[str, Any]] = {}

    def visit(toolset: AbstractToolset[Any]) -> None:
        if isinstance(toolset, FunctionToolset):
            for name, tool in toolset.tools.items():
                tools[name] = tool.metadata or {}

    for toolset in agent.toolsets:
        toolset.apply(visit)
    return tools


def _output_tools(agent: AbstractAgent[Any, Any]) -> set[str]:
    """The names of the agent's output tools. pydantic-ai has no public way to list them; an agent whose
    output tools cannot be found here has their calls answered as unknown, and the model calls them again."""
    toolset = getattr(agent, "_output_toolset", None)
    processors = getattr(toolset, "processors", None)
    return {name for name in processors if isinstance(name, str)} if isinstance(processors, dict) else set()
