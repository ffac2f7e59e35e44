"""The published API's process-wide names (`_runtime/compat.py`): `settings` is read once and used only by the
default runtimes (and a server given no settings); everything else is given its settings."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

import pydantic_ai_stream
from pydantic_ai_stream import RedisConversationStore, RedisSession, Runtime, Settings
from pydantic_ai_stream._runtime import compat
from support import ScopedDeps


def test_the_legacy_names_are_the_compat_modules() -> None:
    for name in ("settings", "q", "AgxCanceledError"):
        assert getattr(pydantic_ai_stream, name) is getattr(compat, name)


async def test_the_default_runtime_of_a_client_uses_the_process_wide_settings(redis: Redis) -> None:
    runtime = compat.default_runtime(redis)
    assert runtime.settings is compat.settings
    assert compat.default_runtime(redis) is runtime  # one per client and loop
    await runtime.aclose()
    assert compat.default_runtime(redis) is not runtime  # a closed one is let go of


async def test_what_is_built_without_settings_reads_them_from_the_environment(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYDANTIC_AI_STREAM_REDIS_PREFIX", "fromenv")
    async with Runtime(redis=redis) as runtime:
        assert runtime.settings is not compat.settings
        assert runtime.settings.redis_prefix == "fromenv"
    session = RedisSession(redis=redis, scope_id=1, user_id=2, session_id="s1")
    assert session.key == "fromenv:1:2:s1:msgs"
    assert RedisConversationStore(redis=redis, scope_id=1, user_id=2).keys.user == "fromenv:1:2"


async def test_a_runtimes_settings_reach_its_sessions(redis: Redis) -> None:
    async with Runtime(redis=redis, settings=Settings(redis_prefix="mine")) as runtime:
        session = RedisSession(redis=redis, runtime=runtime, scope_id=1, user_id=2, session_id="s1")
        assert session.key == "mine:1:2:s1:msgs"
        assert [k async for k in compat.q(redis, 1, 2, runtime=runtime)] == []


async def test_a_deps_without_a_runtime_keeps_its_conversation_under_its_streams_prefix(redis: Redis) -> None:
    """The published API: `settings.set_redis_prefix` moves a runtime-less `Deps`'s streams, and its
    `RedisSession.of(deps)` conversation with them (not to the environment's prefix)."""
    before = compat.settings.redis_prefix
    compat.settings.set_redis_prefix("moved")
    try:
        deps = ScopedDeps(redis=redis, user_id=2, session_id="s1")
        assert deps.key() == "moved:1:2:s1"
        assert RedisSession.of(deps).key == "moved:1:2:s1:msgs"
    finally:
        compat.settings.set_redis_prefix(before)
