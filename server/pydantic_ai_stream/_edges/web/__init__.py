"""The web edge (the `web` extra): each hosted agent as a Vercel AI (AI SDK 6 UI message stream) chat endpoint and
an AG-UI endpoint on the HTTP port, both read from the session's Redis stream and resumable on any replica.

Runs go through admission and the queue like gRPC `Run`s; a waiting run's approvals and external results are
answered through `SessionHandle.respond` like `Respond`; Stop is Cancel, a disconnect is nothing. Every SSE event's
`id` is an exact cursor (`events.WebCursor`); a reconnect with `Last-Event-ID` (or `?after=`) replays the run from
its `begin` through pydantic-ai's own encoders and sends what comes after it.

Modules: `events` turns entries back into pydantic-ai events, `encode` runs them through pydantic-ai's UI event
streams with cursors, `turns` reads what a request asks, `routes` serves it all; `page` serves the chat page
(`static/`, see README "Chat page") that speaks to them. See README "HTTP: Vercel AI and AG-UI".
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from starlette.routing import BaseRoute

    from ..._runtime.deps import HostedDeps
    from ..._store.sessions import Session
    from ..grpc.servicer import AgentStreamServicer

__all__ = ["web_routes"]


def web_routes(
    servicer: AgentStreamServicer,
    sessions: Callable[[HostedDeps[Any]], Session] | None = None,
    *,
    stopping: asyncio.Event | None = None,
) -> list[BaseRoute]:
    """The web edge's routes for `servicer`'s agents and callers, conversations read from `sessions` (default:
    Redis); its event streams end when `stopping` is set. ImportError without the `web` extra."""
    from .routes import WebEdge

    edge = WebEdge(servicer=servicer, stopping=stopping or asyncio.Event())
    if sessions is not None:
        edge.sessions = sessions
    return edge.routes()
