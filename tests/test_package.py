"""The package as users install and import it: its public names, its version, its wheel."""

from __future__ import annotations

import ast
import email
import functools
import inspect
import shutil
import subprocess
import sys
import zipfile
from collections import ChainMap
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from types import FunctionType, ModuleType, SimpleNamespace
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from packaging.version import Version

import pydantic_ai_stream
import pydantic_ai_stream.client
import pydantic_ai_stream.server
from pydantic_ai_stream._edges.web.page import STATIC

ROOT = Path(__file__).parent.parent
PUBLIC = (pydantic_ai_stream, pydantic_ai_stream.server, pydantic_ai_stream.client)

# Members of public classes that are the layers' own plumbing, not user API: they take or return private types.
# A member that is gone must leave this list too.
PLUMBING = {
    "A2ARequestHandler.tasks": "the A2A task records, built by `add_a2a`",
    "AgentStreamServicer.admission": "the rules that admit its runs, built from its own fields",
    "Deps.attach": "the run loop hands a run's `LiveRun` to its deps",
    "Deps.live_run": "the run's write side, for the run loop",
    "Runtime.hub": "its shared reader, for listeners",
    "Runtime.end_run": "ends a run's write side (`LiveRun`), for the run loop and the worker",
    "Runtime.leases": "its lease keeper, for runs",
    "Runtime.open_run": "opens a run's write side (`LiveRun`), for the run loop",
    "Runtime.owning": "holds a run's write side (`LiveRun`) until it ends, for the worker",
    "Runtime.queue": "the run queue, for handles and workers",
    "Runtime.stream": "a session's Redis side, for the layers above it",
    "Runtime.task_keys": "the A2A edge's keys",
    "Runtime.writes": "its write batching, for runs",
    "SessionHandle.stream": "a session's Redis side, for the layers above it",
    "SessionOwner.hub": "as `Runtime.hub`",
    "SessionOwner.run_ended": "as `Runtime.run_ended`: a session's Redis side, for admission",
    "SessionOwner.stream": "as `Runtime.stream`",
    "Telemetry.run": "the worker's span of a run",
    "Worker.adopter": "the worker's recovery of a job",
}


def test_every_public_name_resolves_from_the_package() -> None:
    for name in pydantic_ai_stream.__all__:
        assert getattr(pydantic_ai_stream, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from pydantic_ai_stream import *", namespace)
    assert set(pydantic_ai_stream.__all__) <= set(namespace)


def test_every_public_class_function_and_alias_is_named_after_its_public_module() -> None:
    """As httpx's: `pydantic_ai_stream.Entry`, not the private module it lives in (values have no name of their own)."""
    for module in PUBLIC:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type | FunctionType) or get_origin(value) is not None:
                assert value.__module__ == module.__name__, f"{module.__name__}.{name}"


def test_every_type_a_public_signature_names_is_exported() -> None:
    """What a public function or method takes and returns can be named without a private import."""
    exported = {id(getattr(module, name)) for module in PUBLIC for name in module.__all__}
    unexported, used = [], set()
    for owner, name, hints in _public_signatures():
        for param, annotation in hints.items():
            if param.startswith("_"):
                continue
            private = [t for t in _named(annotation) if id(t) not in exported and _is_private(t.__module__)]
            allowed = {f"{owner}.{name}", f"{owner}.{param}"} & PLUMBING.keys()
            used |= allowed
            if private and not allowed:
                unexported.append(f"{owner}.{name}({param}): {', '.join(t.__qualname__ for t in private)}")
    assert unexported == []
    assert PLUMBING.keys() <= used, "a member listed in PLUMBING is gone: drop it from the list"


def _is_private(module: str) -> bool:
    return module.startswith("pydantic_ai_stream.") and any(part.startswith("_") for part in module.split("."))


def _public_signatures() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """`(owner, member, resolved annotations)` of every public function, and of every public member, field and
    constructor of the public classes and their bases in the package."""
    for module in PUBLIC:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, FunctionType):
                yield module.__name__, name, _hints(value)
            elif isinstance(value, type) and value.__module__.startswith("pydantic_ai_stream"):
                for base in value.__mro__:
                    if base.__module__.startswith("pydantic_ai_stream"):
                        yield from _members(base)


def _members(cls: type) -> Iterator[tuple[str, str, dict[str, Any]]]:
    if "model_fields" in vars(cls):  # pydantic settings: their fields, resolved already
        yield cls.__qualname__, "fields", {n: f.annotation for n, f in cls.model_fields.items()}  # type: ignore[attr-defined]
    else:
        own = SimpleNamespace(__annotations__=vars(cls).get("__annotations__", {}))
        yield cls.__qualname__, "fields", _hints(own, home=_home(cls))
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        member = getattr(member, "fget", None) or getattr(member, "__func__", member)  # property, class method
        if isinstance(member, FunctionType):
            yield cls.__qualname__, name, _hints(member)


def _home(cls: type) -> dict[str, Any]:
    """The globals of the module that defines `cls` (its `__module__` is the public one): any of its functions'."""
    for member in vars(cls).values():
        member = getattr(member, "fget", None) or getattr(member, "__func__", member)
        if isinstance(member, FunctionType) and member.__globals__.get("__name__", "").startswith("pydantic_ai_stream"):
            return member.__globals__
    return vars(sys.modules[cls.__module__])  # no functions: a TypedDict or a NamedTuple, resolved on its own


def _hints(obj: Callable[..., Any] | SimpleNamespace, home: dict[str, Any] | None = None) -> dict[str, Any]:
    """`obj`'s annotations resolved where it is defined, names imported there under `TYPE_CHECKING` included,
    then in the package's other modules (a string alias such as `AsyncRedis` names what its own module imports)."""
    home = home if home is not None else inspect.unwrap(obj).__globals__  # type: ignore[arg-type]
    package = [module for name, module in sorted(sys.modules.items()) if name.startswith("pydantic_ai_stream")]
    modules = [sys.modules[home["__name__"]], *package]
    names = ChainMap(*(_type_checking_names(m) for m in modules), *(vars(m) for m in modules))
    return get_type_hints(obj, globalns=home, localns=names)  # type: ignore[arg-type]


@functools.cache
def _type_checking_names(module: ModuleType) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": module.__name__, "__package__": module.__package__}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            exec(compile(ast.Module(body=node.body, type_ignores=[]), module.__name__, "exec"), namespace)
    return namespace


def _named(annotation: Any) -> Iterator[type]:
    """The classes an annotation names, `X` of `AsyncIterator[X | None]` included."""
    if isinstance(annotation, type):
        yield annotation
    for arg in get_args(annotation):
        for each in arg if isinstance(arg, list) else [arg]:  # `Callable[[A], B]`
            yield from _named(each)


@pytest.mark.e2e
def test_the_package_imports_a_names_module_on_its_first_use_and_lists_every_name_before() -> None:
    probe = "import sys, pydantic_ai_stream as p; print(set(p.__all__) <= set(dir(p)), 'pydantic_ai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == "True False\n"


@pytest.mark.e2e
def test_the_postgres_names_without_psycopg_say_which_extra_to_install() -> None:
    probe = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n    from pydantic_ai_stream import PostgresSession\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == "PostgresSession needs the postgres extra: pip install 'pydantic-ai-stream[postgres]>=0.2'\n"


@pytest.mark.e2e
def test_the_wheel_is_this_version_with_its_extras(tmp_path: Path) -> None:
    """What `pip install ./dist/pydantic_ai_stream-0.2.0-py3-none-any.whl[otel]` (README, Install) gets."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name == f"pydantic_ai_stream-{pydantic_ai_stream.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as files:
        metadata = email.message_from_bytes(
            files.read(f"pydantic_ai_stream-{pydantic_ai_stream.__version__}.dist-info/METADATA")
        )
        names = set(files.namelist())
    assert metadata["Version"] == pydantic_ai_stream.__version__ == version("pydantic-ai-stream")
    assert Version(metadata["Version"]) >= Version("0.2"), "past the published 0.1.1"
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"otel", "a2a", "postgres", "embedded", "openai"} <= extras
    assert {
        "pydantic_ai_stream/client.py",
        "pydantic_ai_stream/py.typed",
        "pydantic_ai_stream/v1/stream_pb2.py",
    } <= names
    lua = {path.relative_to(ROOT / "server").as_posix() for path in (ROOT / "server").rglob("*.lua")}
    assert "pydantic_ai_stream/_store/scripts/lib.lua" in lua
    assert lua <= names, "the Lua scripts ship in the wheel"
    page = {path.relative_to(ROOT / "server").as_posix() for path in STATIC.iterdir()}
    assert "pydantic_ai_stream/_edges/web/static/index.html" in page
    assert page <= names, "the chat page ships in the wheel"


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm (Node 20+), as the TypeScript client does")
def test_npm_install_of_the_typescript_client_folder_gives_a_working_package(tmp_path: Path) -> None:
    """`npm install ./clients/typescript` (clients/README.md) into a project of its own, from a clone's files:
    the folder's `prepare` installs its dependencies and builds it."""
    clone = tmp_path / "typescript"
    shutil.copytree(ROOT / "clients/typescript", clone, ignore=shutil.ignore_patterns("node_modules", "dist"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true}\n')
    npm = ["npm", "install", "--no-audit", "--no-fund", "../typescript"]
    subprocess.run(npm, cwd=app, check=True, capture_output=True, timeout=300)
    probes = {
        "import": "const m = await import('@pydantic-ai-stream/client');",
        "require": "const m = require('@pydantic-ai-stream/client');",
    }
    for kind, load in probes.items():
        use = "console.log(typeof m.StreamClient, new m.Transcript().text() === '', m.EventType.END > 0)"
        module = ["--input-type=module"] if kind == "import" else []
        out = subprocess.run(
            ["node", *module, "-e", f"{load} {use}"], cwd=app, check=True, capture_output=True, text=True, timeout=60
        ).stdout
        assert out == "function true true\n", kind
