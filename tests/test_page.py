"""The chat page's files as the HTTP port serves them: `/` sends a browser to `/chat/`, whose modules all load."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.testclient import TestClient

from pydantic_ai_stream._edges.web.page import STATIC, page_routes


def _client() -> TestClient:
    return TestClient(Starlette(routes=page_routes()))


def test_the_root_redirects_to_the_chat_page() -> None:
    with _client() as client:
        response = client.get("/", follow_redirects=False)
        assert response.status_code in (302, 307)
        assert response.headers["location"] == "/chat/"
        page = client.get("/chat/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text


def test_every_module_the_page_imports_is_served_as_javascript() -> None:
    """A browser refuses an ES module served with another type, and a missing import breaks the whole page."""
    modules = {path.name for path in STATIC.glob("*.js")}
    imported = {"app.js"}
    for name in modules:
        imported |= {m.removeprefix("./") for m in re.findall(r'from "(\./[^"]+)"', (STATIC / name).read_text())}
    assert imported <= modules, f"imports of files that are not there: {imported - modules}"
    with _client() as client:
        for name in sorted(modules):
            response = client.get(f"/chat/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        assert client.get("/chat/chat.css").headers["content-type"].startswith("text/css")
        assert client.get("/chat/../page.py").status_code == 404
