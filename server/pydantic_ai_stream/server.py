"""The gRPC server's public API: serve hosted agents, or embed the servicer in a server of your own.

`pydantic-ai-stream serve` is `serve(ServerSettings(...))`; `running_server` runs one inside an async
context (tests, or a process that serves beside other work); `AgentStreamServicer` with an
`Authenticator` of your own plugs into any `grpc.aio` server. `Worker` executes queued runs (`work` is
`pydantic-ai-stream worker`). `add_a2a(server, servicer, url=)` serves A2A beside it (the `a2a` extra), and
`a2a_routes(handler)` the same over HTTP (Starlette routes).
"""

from typing import TYPE_CHECKING, Any

from ._edges.grpc_server import running_server, serve
from ._edges.grpc_service import AgentStreamServicer
from ._edges.process import redis_client, work
from ._edges.proto import ListenResponseCache
from ._edges.server_config import ServerSettings, load_agent
from ._runtime.auth import Anonymous, Authenticator, AuthError, Caller, StaticTokens
from ._runtime.deps import HostedDeps
from ._runtime.worker import Worker

if TYPE_CHECKING:
    from ._edges.a2a.service import a2a_routes, add_a2a

__all__ = [
    "AgentStreamServicer",
    "Anonymous",
    "AuthError",
    "Authenticator",
    "Caller",
    "HostedDeps",
    "ListenResponseCache",
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


def __getattr__(name: str) -> Any:
    """`add_a2a` and `a2a_routes`, imported on first use: they need the `a2a` extra (the a2a SDK)."""
    if name in ("add_a2a", "a2a_routes"):
        try:
            from ._edges.a2a import service as a2a
        except ImportError as e:
            raise ImportError(f"{name} needs the a2a extra: pip install 'pydantic-ai-stream[a2a]>=0.2' ({e})") from e
        return getattr(a2a, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
