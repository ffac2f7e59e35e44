from __future__ import annotations

import pytest

from pydantic_ai_stream import InvalidIdError, SessionKeys, Settings
from pydantic_ai_stream._core.keys import active_key, check_id

BAD_IDS = ["", "a:b", "a*", "a?", "a[b", "a]", "{a", "a}", "a b", "a\tb", "a\nb", "x" * 129, "a\\b"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_unsafe_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdError, match="session_id"):
        SessionKeys.build(prefix="p", scope_id=1, user_id=2, session_id=bad)


@pytest.mark.parametrize("good", ["s1", "session-1", "a.b_c~d", "x" * 128, "ünïcode"])
def test_safe_ids_pass(good: str) -> None:
    assert check_id("session_id", good) == good


@pytest.mark.parametrize("bad", [True, "1", 1.5, None])
def test_scope_and_user_must_be_ints(bad: object) -> None:
    with pytest.raises(InvalidIdError, match="user_id must be an int"):
        SessionKeys.build(prefix="p", scope_id=1, user_id=bad, session_id="s")  # type: ignore[arg-type]


def test_seed_key_layout() -> None:
    keys = SessionKeys.build(prefix="pyaix", scope_id=1, user_id=2, session_id="s1")
    assert (keys.stream, keys.live) == ("pyaix:1:2:s1", "pyaix:1:2:s1:live")
    # The active set's empty session segment cannot be any session's key.
    assert keys.active == "pyaix:1:2::active" == active_key(prefix="pyaix", scope_id=1, user_id=2)


def test_cluster_layout_shares_a_slot_per_user() -> None:
    keys = SessionKeys.build(prefix="pyaix", scope_id=1, user_id=2, session_id="s1", hash_tags=True)
    assert (keys.stream, keys.live, keys.active) == (
        "{pyaix:1:2}:s1",
        "{pyaix:1:2}:s1:live",
        "{pyaix:1:2}::active",
    )


def test_prefix_is_checked_and_defaults_to_pyaix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redis_prefix == "pyaix"
    monkeypatch.setenv("PYDANTIC_AI_STREAM_REDIS_PREFIX", "myapp")
    assert Settings().redis_prefix == "myapp"
    with pytest.raises(ValueError, match="prefix"):
        Settings().set_redis_prefix("bad prefix")
