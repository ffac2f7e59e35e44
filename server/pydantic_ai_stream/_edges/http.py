"""The HTTP edge (`serve --http-port`): one ASGI app, served by uvicorn in the server's own event loop.

Each edge hands its routes to `HttpServer` (A2A: JSON-RPC, REST and agent cards; web: Vercel AI and AG-UI); the app
is assembled from them in one place, so a new edge adds routes, not a server. Needs `starlette` and `uvicorn` (the
`a2a` and `web` extras have them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpServer"]


@dataclass(frozen=True, kw_only=True)
class _Bounded:
    """Refuses request bodies over `max_bytes` (413): a client cannot make the server hold more, as on gRPC."""

    app: ASGIApp
    max_bytes: int

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await PlainTextResponse(self._refusal(), status_code=413)(scope, receive, send)
            return
        read = 0

        async def bounded() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_bytes:  # a body without a length, or longer than it said
                    raise HTTPException(413, self._refusal())
            return message

        await self.app(scope, bounded, send)

    def _refusal(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


_BACKLOG = 2048
"""Connections the port queues before they are accepted (uvicorn's default)."""


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the server process handles SIGTERM and stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(kw_only=True)
class HttpServer:
    """The server's HTTP port: `routes` (from every edge) served on `host:port` (0 picks a free one) until `stop`."""

    host: str
    port: int
    routes: list[BaseRoute] = field(default_factory=list)
    """What it serves: each edge adds its routes before `start`."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """CA of client certificates: set it to require them (mTLS), as on the gRPC port."""
    max_request_bytes: int = 8 * 1024 * 1024
    """Largest request body read (413 beyond), as the gRPC port's `max_request_bytes`."""
    shutdown_grace: int = 1
    """Seconds open responses (event streams) get to finish on `stop` before they are cancelled."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when `stop` begins: event streams that watch it end cleanly (their clients resume elsewhere)."""
    _server: _Uvicorn | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _socket: socket.socket | None = field(default=None, init=False)

    @property
    def bound_port(self) -> int:
        """The port it listens on (once started)."""
        assert self._socket is not None, "not started"
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """`http(s)://host:port` as bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.bound_port}"

    def bind(self) -> int:
        """Take the port now (a taken port fails here, before anything is served); the port bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit it: an event stream's small writes go out at once, not held back by
            # Nagle's algorithm until the client's delayed ACK (~40 ms a chunk).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
            sock.listen(_BACKLOG)  # now: a client that connects before uvicorn accepts waits, is not refused
        except OSError:
            sock.close()
            raise
        self._socket = sock
        return self.bound_port

    async def start(self) -> None:
        """Serve the routes on the bound port (`bind` first if not yet)."""
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            _Bounded(app=Starlette(routes=self.routes), max_bytes=self.max_request_bytes),
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=self.shutdown_grace,
            ssl_certfile=self.tls_cert,
            ssl_keyfile=self.tls_key,
            ssl_ca_certs=str(self.tls_client_ca) if self.tls_client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if self.tls_client_ca else ssl.CERT_NONE,
        )
        config.load()  # here: a TLS file that does not load fails `start`, not the serving task
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    async def stop(self) -> None:
        """Stop taking connections, give open responses `shutdown_grace` seconds, then end them."""
        self.stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
