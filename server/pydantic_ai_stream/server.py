"""The gRPC server's public API: serve hosted agents, or embed the servicer in a server of your own.

`pydantic-ai-stream serve` is `serve(ServerSettings(...))`; `running_server` runs one inside an async
context (tests, or a process that serves beside other work); `AgentStreamServicer` with an
`Authenticator` of your own plugs into any `grpc.aio` server. `Worker` executes queued runs (`work` is
`pydantic-ai-stream worker`).
"""

from ._auth import Anonymous, Authenticator, AuthError, Caller, StaticTokens
from ._deps import HostedDeps
from ._proto import ListenResponseCache
from ._serve import ServerSettings, load_agent, running_server, serve, work
from ._service import AgentStreamServicer
from ._worker import Worker

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
    "load_agent",
    "running_server",
    "serve",
    "work",
]
