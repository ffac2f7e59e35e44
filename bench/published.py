"""A venv with the published `pydantic-ai-stream` 0.1.1, on our pydantic-ai and redis-py versions.

Created once and reused while its recorded versions match. The package is installed without its
declared dependencies: they would pull in ~70 packages and downgrade pydantic-ai.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

PUBLISHED_VERSION = "0.1.1"
VENV = Path(__file__).resolve().parent / ".venv-published"
STAMP = VENV / "bench-versions.json"


def wanted() -> dict[str, str]:
    """The versions the published side runs on: ours for what both packages share."""
    return {
        "pydantic-ai-stream": PUBLISHED_VERSION,
        "pydantic-ai-slim": version("pydantic-ai-slim"),
        "redis": version("redis"),
    }


def python() -> Path:
    """The published venv's interpreter, creating the venv first if needed."""
    interpreter = VENV / "bin" / "python"
    want = wanted()
    if STAMP.exists() and json.loads(STAMP.read_text()) == want and interpreter.exists():
        return interpreter
    print(f"[bench] creating {VENV.name} with pydantic-ai-stream=={PUBLISHED_VERSION}", file=sys.stderr, flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    pip = [str(interpreter), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [*pip, f"pydantic-ai-slim=={want['pydantic-ai-slim']}", f"redis=={want['redis']}", "pydantic-settings"],
        [*pip, "--no-deps", f"pydantic-ai-stream=={PUBLISHED_VERSION}"],
    ]
    for step in steps:
        if subprocess.run(step, stdout=sys.stderr).returncode != 0:
            raise SystemExit(f"could not create {VENV} ({' '.join(step[:4])} ...); use --skip-published")
    STAMP.write_text(json.dumps(want))  # last: an interrupted creation is redone next time
    return interpreter
