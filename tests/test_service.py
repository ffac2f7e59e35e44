"""The servicer's own state: the shared Listen response cache stays within its byte budget."""

from __future__ import annotations

import json

from pydantic_ai_stream.service import ListenResponseCache
from pydantic_ai_stream.store import Entry


def _entry(i: int, size: int) -> Entry:
    body = {"user_prompt": "x" * size}
    return Entry(id=f"{i}-0", type="begin", origin="pydantic-ai-stream", body=body, body_json=json.dumps(body))


def test_the_response_cache_is_bounded_in_bytes_not_entries() -> None:
    cache = ListenResponseCache(max_bytes=4 << 20)
    for i in range(200):
        cache.response(f"s{i}", _entry(i, 100_000))  # 200 begins of 100 kB: 20 MB
    assert cache.size_bytes <= 4 << 20
    first = cache.response("s199", _entry(199, 100_000))
    assert cache.response("s199", _entry(199, 100_000)) is first, "recent entries are shared"


def test_an_entry_too_large_to_share_is_converted_each_time() -> None:
    cache = ListenResponseCache(max_bytes=1 << 20)
    huge = _entry(1, 300_000)
    assert cache.response("s", huge) is not cache.response("s", huge)
    assert cache.size_bytes == 0
    assert cache.response("s", huge).event.body_json == huge.body_json
