"""The gRPC server's public API: serve hosted agents, or embed the servicer in a server of your own.

`pydantic-ai-stream serve` is `serve(ServerSettings(...))`; `running_server` runs one inside an async
context (tests, or a process that serves beside other work); `AgentStreamServicer` with an
`Authenticator` of your own plugs into any `grpc.aio` server.
"""

from ._auth import Anonymous, Authenticator, AuthError, Caller, StaticTokens
from ._proto import ListenResponseCache
from ._serve import ServerSettings, load_agent, running_server, serve
from ._service import AgentStreamServicer

__all__ = [
    "AgentStreamServicer",
    "Anonymous",
    "AuthError",
    "Authenticator",
    "Caller",
    "ListenResponseCache",
    "ServerSettings",
    "StaticTokens",
    "load_agent",
    "running_server",
    "serve",
]
