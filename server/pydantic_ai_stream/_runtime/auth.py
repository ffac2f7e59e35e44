"""Who is calling: an authenticator turns a call's `authorization` metadata into a scope and user."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .._core.errors import PydanticAIStreamError

__all__ = ["Anonymous", "AuthError", "Authenticator", "Caller", "StaticTokens"]

# A token is sent verbatim: one with whitespace could never be matched.
_WHITESPACE = re.compile(r"\s")


class AuthError(PydanticAIStreamError):
    """The call carries no valid credentials (gRPC UNAUTHENTICATED)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Caller:
    """An authenticated caller: every session it touches is under its scope and user."""

    scope_id: int
    user_id: int
    agents: frozenset[str] | None = None
    """Agents it may run; `None` for all."""

    def may_run(self, agent: str) -> bool:
        """Whether this caller may start runs of `agent`."""
        return self.agents is None or agent in self.agents


class Authenticator(Protocol):
    """Pluggable authentication: raise `AuthError` for calls that are not allowed in."""

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an `authorization` metadata value (e.g. `Bearer <token>`), if any."""
        ...


@dataclass(frozen=True, kw_only=True)
class StaticTokens:
    """Bearer tokens from configuration, each mapped to a caller."""

    tokens: Mapping[str, Caller]

    async def authenticate(self, authorization: str | None) -> Caller:
        """Accept exactly `Bearer <token>` for a configured token (no whitespace around the token)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token: send metadata 'authorization: Bearer <token>'")
        caller = self.tokens.get(token)
        if caller is None:
            raise AuthError("unknown bearer token")
        return caller

    @classmethod
    def parse(cls, specs: Sequence[str]) -> StaticTokens:
        """From `TOKEN=SCOPE_ID:USER_ID[:agent,agent...]` specs."""
        tokens = {}
        for spec in specs:
            token, _, target = spec.partition("=")
            scope, _, rest = target.partition(":")
            user, _, agents = rest.partition(":")
            ids_ok = scope.lstrip("-").isdigit() and user.lstrip("-").isdigit()
            if not token or _WHITESPACE.search(token) or not ids_ok:
                raise ValueError(
                    f"token spec {spec!r} is not TOKEN=SCOPE_ID:USER_ID[:agent,...] (TOKEN without spaces)"
                )
            allowed = frozenset(a for a in agents.split(",") if a) or None
            tokens[token] = Caller(scope_id=int(scope), user_id=int(user), agents=allowed)
        return cls(tokens=tokens)


@dataclass(frozen=True, kw_only=True)
class Anonymous:
    """No authentication: every call is the same caller (serve on loopback only)."""

    caller: Caller

    async def authenticate(self, authorization: str | None) -> Caller:
        """Everyone is `caller`."""
        return self.caller
