"""The Lua scripts as files: the loader, the shared library, the names and codes filled in (each script's
contract: `test_scripts_run.py`, `test_scripts_durable.py`)."""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream._core.names import lua
from pydantic_ai_stream._store import scripts
from pydantic_ai_stream._store.scripts import LuaScript, conversation, library, session, waiting

SCRIPTS = Path(scripts.__file__).parent


class _Code(IntEnum):
    NO = 0
    YES = 7


def test_the_library_lists_its_functions_each_after_those_it_calls() -> None:
    functions = list(library())
    assert {"field", "is_end", "holds", "is_run", "end_run", "add_job", "wake"} <= set(functions)
    assert functions.index("field") < functions.index("is_end")
    assert functions.index("wake") < functions.index("add_job")


def test_a_script_gets_the_library_functions_it_calls_and_only_those() -> None:
    source = LuaScript.from_source("return is_end(last_entry(KEYS[1]))\n").source
    assert "local function is_end(" in source
    assert "local function field(" in source, "is_end calls it"
    assert "local function add_job(" not in source
    assert source.index("local function field(") < source.index("local function is_end(")
    assert "$END" not in source


def test_names_codes_and_values_are_filled_in_once() -> None:
    filled = lua("return {$END, $_Code.YES, $LIMIT, '$$'}", {"_Code.YES": _Code.YES, "LIMIT": 3})
    assert filled == "return {'end', 7, 3, '$'}"
    with pytest.raises(KeyError):
        lua("return $NOT_A_NAME")
    assert "return {7, 0}" in LuaScript.from_source("return {$_Code.YES, $_Code.NO}", codes=[_Code]).source


def test_every_store_script_is_loaded_and_filled_in_completely() -> None:
    modules = (session, conversation, waiting)
    loaded = [script.source for module in modules for script in vars(module).values() if isinstance(script, LuaScript)]
    files = {path.stem for path in SCRIPTS.glob("*.lua")} - {"lib"}
    assert len(loaded) == len(files) == 13 + 4 + 2
    for source in loaded:
        assert re.search(r"\$\w", source) is None, "a placeholder left"


async def test_a_script_is_loaded_into_a_server_that_lacks_it(redis: Redis) -> None:
    script = LuaScript(lua("return {$BEGIN, ARGV[1], KEYS[1]}"))
    await redis.script_flush()
    assert await script(redis, keys=["k"], args=["a"]) == [b"begin", b"a", b"k"]
    assert await redis.script_exists(script.sha) == [True]
    assert await script(redis, keys=["k"], args=["b"]) == [b"begin", b"b", b"k"]


async def test_the_wake_fragment_keeps_the_ready_stream_bounded(redis: Redis) -> None:
    script = LuaScript.from_source("for _ = 1, 3 do wake(KEYS[1]) end\nreturn 1\n", values={"READY_MAXLEN": 1})
    await redis.delete("ready")
    assert await script(redis, keys=["ready"], args=[]) == 1
    assert 1 <= await redis.xlen("ready") <= 3
