"""clients/README.md shows each client's example as the exact file its end-to-end test runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "clients/README.md"
# An embedded file: a `<!-- file: PATH -->` line, then a fenced block holding the file's text.
EMBEDDED = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<text>.*?)```\n", re.DOTALL)
EXAMPLES = {
    "examples/grpc_quickstart.py",
    "clients/typescript/examples/quickstart.ts",
    "clients/typescript/examples/external_tool.ts",
    "clients/go/quickstart/quickstart.go",
    "clients/java/src/test/java/io/github/pydanticaistream/examples/Quickstart.java",
}


def embedded() -> dict[str, str]:
    return {m["path"]: m["text"] for m in EMBEDDED.finditer(README.read_text())}


def test_every_client_example_is_embedded() -> None:
    assert set(embedded()) == EXAMPLES


def test_each_embedded_example_is_the_file_its_test_runs() -> None:
    for path, text in embedded().items():
        assert text == (REPO / path).read_text(), f"clients/README.md is out of date for {path}"
