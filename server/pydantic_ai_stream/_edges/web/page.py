"""The chat page: static files (vanilla ES modules, no build step) shipped in the package, at `/chat/`.

It speaks the Vercel AI UI message stream to the web edge's routes; `/` sends a browser to it.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "page_routes"]

STATIC = Path(__file__).parent / "static"
"""The page's files."""


def page_routes() -> list[BaseRoute]:
    """`/chat/` (its files; `index.html` for the folder) and `/`, which redirects there."""
    return [
        Route("/", RedirectResponse("/chat/"), methods=["GET", "HEAD"]),
        Mount("/chat", StaticFiles(directory=STATIC, html=True), name="chat"),
    ]
