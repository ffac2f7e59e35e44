"""The package as users install and import it: its public names, its version, its wheel."""

from __future__ import annotations

import subprocess
import sys

import pydantic_ai_stream


def test_every_public_name_resolves_from_the_package() -> None:
    for name in pydantic_ai_stream.__all__:
        assert getattr(pydantic_ai_stream, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from pydantic_ai_stream import *", namespace)
    assert set(pydantic_ai_stream.__all__) <= set(namespace)


def test_the_postgres_names_without_psycopg_say_which_extra_to_install() -> None:
    probe = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n    from pydantic_ai_stream import PostgresSession\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == "PostgresSession needs the postgres extra: pip install 'pydantic-ai-stream[postgres]'\n"
