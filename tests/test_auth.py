"""Bearer tokens: exactly `Bearer <token>`, nothing around it."""

from __future__ import annotations

import pytest

from pydantic_ai_stream.server import AuthError, Caller, StaticTokens

TOKENS = StaticTokens.parse(["secret=1:2"])


async def test_the_exact_token_is_accepted() -> None:
    assert await TOKENS.authenticate("Bearer secret") == Caller(scope_id=1, user_id=2)


@pytest.mark.parametrize(
    "authorization", ["Bearer secret\n", "Bearer secret ", "Bearer secret\t", "Bearer  secret", "Bearer \nsecret", None]
)
async def test_a_token_with_whitespace_around_it_is_refused(authorization: str | None) -> None:
    with pytest.raises(AuthError):
        await TOKENS.authenticate(authorization)


def test_a_token_spec_with_whitespace_is_refused() -> None:
    with pytest.raises(ValueError, match="TOKEN=SCOPE_ID"):
        StaticTokens.parse(["sec ret=1:2"])
