"""The A2A protocol (`lf.a2a.v1.A2AService`, the `a2a` extra) served on our runtime: the SDK's `GrpcHandler` on
`A2ARequestHandler` (`add_a2a`), and its JSON-RPC and REST routes over HTTP behind our authentication (`a2a_routes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import grpc
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import GrpcHandler
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.types import a2a_pb2_grpc as a2a_grpc
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from ..._runtime.auth import AuthError
from ..grpc.servicer import AgentStreamServicer
from . import A2A_HTTP_PREFIX, JSONRPC_PATH, REST_PATH
from .calls import HTTP_CALLER
from .handler import A2ARequestHandler
from .store import RedisTaskStore

__all__ = ["a2a_routes", "add_a2a"]


def add_a2a(
    server: grpc.aio.Server, servicer: AgentStreamServicer, *, url: str, http_url: str | None = None
) -> A2ARequestHandler:
    """Serve `A2AService` on `server` for `servicer`'s hosted agents (the SDK's `GrpcHandler` on our handler);
    returns the handler, which `a2a_routes` serves over HTTP too (`http_url`: where, as cards say)."""
    handler = A2ARequestHandler(
        servicer=servicer, url=url, http_url=http_url, tasks=RedisTaskStore(runtime=servicer.runtime)
    )
    a2a_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)  # type: ignore[no-untyped-call]
    return handler


def a2a_routes(handler: A2ARequestHandler) -> list[BaseRoute]:
    """A2A over HTTP on `handler` (the one the gRPC service uses): the SDK's JSON-RPC (`JSONRPC_PATH`) and REST
    (`REST_PATH`) routes behind our authentication, the default agent's card at `/.well-known/agent-card.json` and
    each agent's at `/a2a/agents/<name>/.well-known/agent-card.json` (public, as discovery needs)."""
    context_builder = _HttpCallContextBuilder()
    rpc = Router(
        routes=[
            *create_jsonrpc_routes(handler, JSONRPC_PATH.removeprefix(A2A_HTTP_PREFIX), context_builder),
            Mount(REST_PATH.removeprefix(A2A_HTTP_PREFIX), routes=create_rest_routes(handler, context_builder)),
        ]
    )
    routes: list[BaseRoute] = []
    if (default := handler.default_agent()) is not None:
        routes += create_agent_card_routes(handler.card(default))
    for name in handler.servicer.agents:
        card_url = f"{A2A_HTTP_PREFIX}/agents/{quote(name, safe='')}{AGENT_CARD_WELL_KNOWN_PATH}"
        routes += create_agent_card_routes(handler.card(name), card_url=card_url)
    routes.append(Mount(A2A_HTTP_PREFIX, app=_Authenticated(app=rpc, servicer=handler.servicer)))
    return routes


@dataclass(frozen=True, kw_only=True)
class _Authenticated:
    """Lets only authenticated requests through to `app` (401 otherwise), as the gRPC edge authenticates every
    call first; the caller goes on in the request's state (`_HTTP_CALLER`)."""

    app: ASGIApp
    servicer: AgentStreamServicer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            values = [value.decode("latin-1") for key, value in scope["headers"] if key == b"authorization"]
            try:
                caller = await self.servicer.admission.authenticate(values)
            except AuthError as e:
                response = JSONResponse({"error": str(e)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[HTTP_CALLER] = caller
        await self.app(scope, receive, send)


class _HttpCallContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context of an HTTP request, with the caller `_Authenticated` let in."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[HTTP_CALLER] = request.scope["state"][HTTP_CALLER]
        return context
