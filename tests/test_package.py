"""The package as users install and import it: its public names, its version, its wheel."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

import pydantic_ai_stream

ROOT = Path(__file__).parent.parent


def test_every_public_name_resolves_from_the_package() -> None:
    for name in pydantic_ai_stream.__all__:
        assert getattr(pydantic_ai_stream, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from pydantic_ai_stream import *", namespace)
    assert set(pydantic_ai_stream.__all__) <= set(namespace)


def test_the_package_imports_a_names_module_on_its_first_use_and_lists_every_name_before() -> None:
    probe = "import sys, pydantic_ai_stream as p; print(set(p.__all__) <= set(dir(p)), 'pydantic_ai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == "True False\n"


def test_the_postgres_names_without_psycopg_say_which_extra_to_install() -> None:
    probe = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n    from pydantic_ai_stream import PostgresSession\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == "PostgresSession needs the postgres extra: pip install 'pydantic-ai-stream[postgres]>=0.2'\n"


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
