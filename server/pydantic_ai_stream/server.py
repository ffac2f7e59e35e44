"""The gRPC server's public API: serve hosted agents, or embed the servicer in a server of your own.

`pydantic-ai-stream serve` is `serve(ServerSettings(...))`; `running_server` runs one inside an async
context (tests, or a process that serves beside other work); `AgentStreamServicer` with an
`Authenticator` of your own plugs into any `grpc.aio` server. `Worker` executes queued runs (`work` is
`pydantic-ai-stream worker`). `add_a2a(server, servicer, url=)` serves A2A beside it (the `a2a` extra), and
`a2a_routes(handler)` the same over HTTP (Starlette routes).
"""

from typing import TYPE_CHECKING, Any

from ._core.inputs import InputBounds
from ._edges.config import ServerSettings, load_agent
from ._edges.grpc.proto import ListenResponseCache
from ._edges.grpc.server import RunningServer, running_server, serve
from ._edges.grpc.servicer import AgentStreamServicer
from ._edges.process import redis_client, work
from ._exports import first_use, named
from ._runtime.auth import Anonymous, Authenticator, AuthError, Caller, StaticTokens
from ._runtime.deps import HostedDeps
from ._runtime.worker import Worker

if TYPE_CHECKING:
    from ._edges.a2a.handler import A2ARequestHandler
    from ._edges.a2a.service import a2a_routes, add_a2a
    from ._edges.http import HttpServer

__all__ = [
    "A2ARequestHandler",
    "AgentStreamServicer",
    "Anonymous",
    "AuthError",
    "Authenticator",
    "Caller",
    "HostedDeps",
    "HttpServer",
    "InputBounds",
    "ListenResponseCache",
    "RunningServer",
    "ServerSettings",
    "StaticTokens",
    "Worker",
    "a2a_routes",
    "add_a2a",
    "load_agent",
    "redis_client",
    "running_server",
    "serve",
    "work",
]


# The names that need the `a2a` extra (the a2a SDK, starlette, uvicorn), imported on first use.
_A2A = {
    "A2ARequestHandler": "._edges.a2a.handler",
    "HttpServer": "._edges.http",
    "a2a_routes": "._edges.a2a.service",
    "add_a2a": "._edges.a2a.service",
}


def __getattr__(name: str) -> Any:
    """A name of the `a2a` extra, imported on first use."""
    try:
        return first_use(globals(), name, _A2A)
    except ImportError as e:
        raise ImportError(f"{name} needs the a2a extra: pip install 'pydantic-ai-stream[a2a]>=0.2' ({e})") from e


for _name in set(__all__) - set(_A2A):  # the others are named on first use
    named(globals()[_name], __name__)
del _name
