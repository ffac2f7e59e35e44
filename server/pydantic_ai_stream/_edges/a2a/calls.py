"""What an A2A call carries (its caller and tenant's agent, its transport) and how its errors are said."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from a2a.server.context import ServerCallContext
from a2a.utils.errors import A2AError, InternalError, InvalidParamsError
from a2a.utils.errors import InvalidRequestError as A2AInvalidRequestError

from ..._runtime.auth import Caller
from ..grpc.servicer import status_of, statuses

__all__ = ["CALLER", "HTTP_CALLER", "call_errors", "caller_of", "grpc_call"]

CALLER = "pydantic_ai_stream.caller"
"""Where a call context's state holds the authenticated caller and the tenant's agent."""
HTTP_CALLER = "pydantic_ai_stream.http_caller"
"""Where an HTTP request's scope state (and so its call context's state) holds the caller `a2a_routes` let in."""


def caller_of(context: ServerCallContext) -> tuple[Caller, str]:
    """The authenticated caller and the tenant's agent of a call (put there by `A2ARequestHandler`)."""
    call: tuple[Caller, str] = context.state[CALLER]
    return call


def grpc_call(context: ServerCallContext) -> grpc.aio.ServicerContext[Any, Any] | None:
    """The gRPC call of a call over gRPC (the SDK's `GrpcHandler` puts it there); `None` over HTTP."""
    grpc_context: grpc.aio.ServicerContext[Any, Any] | None = context.state.get("grpc_context")
    return grpc_context


_A2A_ERROR_OF: dict[grpc.StatusCode, type[A2AError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidParamsError,
    grpc.StatusCode.NOT_FOUND: InvalidParamsError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidParamsError,
    grpc.StatusCode.UNAVAILABLE: InternalError,
    grpc.StatusCode.DEADLINE_EXCEEDED: InternalError,
}
"""The A2A error an HTTP caller gets for the library's errors (by their gRPC code; others: `InvalidRequestError`)."""


@contextlib.asynccontextmanager
async def call_errors(context: ServerCallContext) -> AsyncIterator[None]:
    """The library's errors as the call's transport says them: gRPC status codes (`statuses`), or over HTTP the
    A2A errors the SDK's routes answer with, their message led by the same code's name."""
    if (grpc_context := grpc_call(context)) is not None:
        async with statuses(grpc_context):
            yield
        return
    try:
        yield
    except A2AError:
        raise
    except Exception as e:
        if (code := status_of(e)) is None:
            raise
        raise _A2A_ERROR_OF.get(code, A2AInvalidRequestError)(f"{code.name}: {e}") from e
