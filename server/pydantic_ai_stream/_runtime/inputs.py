"""A hosted run's inputs as its agent gets them: the request context its deps carry (validated against the model
the agent declares, `HostedDeps[Model]`), and its user prompt: the text of its `begin`, then its attachments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import UserContent

from .._core.errors import InvalidRequestError
from .._core.inputs import decode_attachments, first_error
from .._write.live import LiveRun
from .deps import HostedDeps

__all__ = ["context_adapter", "hosted_context", "user_prompt_of"]


def context_adapter(agent: AbstractAgent[Any, Any]) -> TypeAdapter[Any] | None:
    """The validator of the context `agent` declares (`deps_type=HostedDeps[Model]`); `None` if it declares none."""
    deps_type = getattr(agent, "deps_type", None)
    if get_origin(deps_type) is not HostedDeps:
        return None
    (model,) = get_args(deps_type)
    return None if model in (Any, dict) or get_origin(model) is dict else TypeAdapter(model)


def hosted_context(agent: AbstractAgent[Any, Any], name: str, context: Mapping[str, Any]) -> Any:
    """A run's request context as the deps of `agent` (hosted as `name`) carry it: an instance of the model the
    agent declares, else the JSON object; `InvalidRequestError` if it does not validate."""
    adapter = context_adapter(agent)
    if adapter is None:
        return dict(context)
    try:
        return adapter.validate_python(dict(context))
    except ValidationError as e:
        raise InvalidRequestError(f"context does not validate for agent {name!r}: {first_error(e)}") from None


async def user_prompt_of(live: LiveRun) -> str | list[UserContent]:
    """The run's user prompt: its `begin`'s text, then its attachments (kept since `adopt`) if it has any."""
    prompt = live.begin.get("user_prompt")
    text = prompt if isinstance(prompt, str) else ""
    if not live.begin.get("attachments"):
        return text
    stored = await live.lease.stream.load_attachments(live.run_id)
    if stored is None:
        raise InvalidRequestError("the run's attachments expired before a worker could start it")
    return [text, *(attachment.content() for attachment in decode_attachments(stored))]
