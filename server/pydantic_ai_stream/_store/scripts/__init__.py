"""Lua scripts as files: `LuaScript.load(package, name)` reads `<name>.lua` beside the code that calls it.

A script is written with `$NAME` placeholders, filled once at load: the names shared with Python
(`_core.names.lua`), the members of the return-code enums it is given (`$OpenState.OPENED`) and its own
values. It calls the functions of the shared library (`lib.lua` in this folder) by name; those it calls
(and those they call) are put before it, so a fragment is written once. A script that writes a session's
stream tells the stream's followers (`written`), except on a Redis Cluster: each script is kept as the two
texts, `$PUBLISH_WRITES` 1 and 0, and a call sends the one for its client.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError

from ..._core.names import lua
from ..redis import AsyncRedis, is_cluster

__all__ = ["LIBRARY_VALUES", "NOTICE_MAX_BYTES", "READY_MAXLEN", "LuaScript", "library"]

READY_MAXLEN = 1000
"""Wake-ups the run queue's ready stream keeps: enough that a worker about to wait sees the newest ones."""

NOTICE_MAX_BYTES = 64 * 1024
"""Bytes of entry bodies a notice of a write carries at most (`carry` in `lib.lua`); a larger write's notice only
says the stream was written. Redis drops a subscriber whose unread messages pass 32 MiB (8 MiB for a minute)."""

LIBRARY_VALUES: Mapping[str, int] = {"READY_MAXLEN": READY_MAXLEN, "NOTICE_MAX_BYTES": NOTICE_MAX_BYTES}
"""The values the library's functions spell as `$NAME`, besides the shared names."""

# A library function: its comment lines, then `local function <name>(` up to the `end` that closes it at column 0.
_FUNCTION = re.compile(r"((?:^--[^\n]*\n)*)^local function (\w+)\(.*?^end\n", re.MULTILINE | re.DOTALL)


@cache
def library() -> dict[str, str]:
    """The shared library's functions by name, in the file's order (a function calls only those above it)."""
    text = files(__name__).joinpath("lib.lua").read_text(encoding="utf-8")
    return {match[2]: match[0] for match in _FUNCTION.finditer(text)}


def _calls(source: str, name: str) -> bool:
    return re.search(rf"(?<![\w.:]){name}\s*\(", source) is not None


def _with_library(body: str) -> str:
    """`body` after the library functions it calls, directly or through another one."""
    functions = library()
    needed: set[str] = set()
    for name in reversed(functions):  # callers come after their callees: see who calls first
        if _calls(body, name) or any(_calls(functions[user], name) for user in needed):
            needed.add(name)
    return "".join(text for name, text in functions.items() if name in needed) + body


@dataclass(frozen=True)
class LuaScript:
    """A Lua script, sent by its SHA1 (`EVALSHA`) and loaded first into a server that lacks it."""

    source: str
    cluster_source: str = ""
    """The script as a Redis Cluster runs it (it publishes nothing); `""`: the same as `source`."""
    sha: str = field(init=False, repr=False)
    cluster_sha: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cluster_source", self.cluster_source or self.source)
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        object.__setattr__(self, "cluster_sha", hashlib.sha1(self.cluster_source.encode()).hexdigest())

    @classmethod
    def load(
        cls,
        package: str | None,
        name: str,
        *,
        codes: Iterable[type[IntEnum]] = (),
        values: Mapping[str, str | int] | None = None,
    ) -> LuaScript:
        """The script `<name>.lua` of `package` (the caller's `__package__`), with the library functions it
        calls, the members of `codes` as `$Enum.MEMBER` and `values` as `$NAME` filled in."""
        if package is None:
            raise ValueError(f"{name}.lua: load it from a module of a package")
        body = files(package).joinpath(f"{name}.lua").read_text(encoding="utf-8")
        return cls.from_source(body, codes=codes, values=values)

    @classmethod
    def from_source(
        cls, body: str, *, codes: Iterable[type[IntEnum]] = (), values: Mapping[str, str | int] | None = None
    ) -> LuaScript:
        """A script written in Python: as `load`, from its text."""
        filled: dict[str, str | int] = dict(LIBRARY_VALUES)
        filled.update((f"{enum.__name__}.{member.name}", int(member)) for enum in codes for member in enum)
        filled.update(values or {})
        text = _with_library(body)
        return cls(lua(text, {**filled, "PUBLISH_WRITES": 1}), lua(text, {**filled, "PUBLISH_WRITES": 0}))

    async def __call__(self, redis: AsyncRedis, *, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        source, sha = (self.cluster_source, self.cluster_sha) if is_cluster(redis) else (self.source, self.sha)
        try:
            return await redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted server (or another node) has not seen it yet
            await redis.script_load(source)
            return await redis.evalsha(sha, len(keys), *keys, *args)
