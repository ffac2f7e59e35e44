"""`ls`'s table as a terminal shows it (the rendering of runs is tested through a pseudo-terminal, in
tests/e2e/test_cli_terminal.py)."""

from __future__ import annotations

import datetime
import re

from rich.console import Console

from pydantic_ai_stream._edges.cli_render import sessions_table
from pydantic_ai_stream.v1 import stream_pb2 as pb

_NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.UTC)


def _ms(seconds_ago: float) -> int:
    return int((_NOW.timestamp() - seconds_ago) * 1000)


def test_the_table_has_a_row_a_session_with_its_state_attempt_and_age() -> None:
    sessions = [
        pb.ActiveSession(session_id="q", run_id="r" * 32, agent="a", state=pb.RUN_STATE_QUEUED,
                         started_unix_ms=_ms(59)),
        pb.ActiveSession(session_id="r", run_id="s1", agent="b", state=pb.RUN_STATE_RUNNING, attempt=2,
                         started_unix_ms=_ms(60)),
        pb.ActiveSession(session_id="w", run_id="s2", agent="c", state=pb.RUN_STATE_WAITING_FOR_INPUT,
                         started_unix_ms=_ms(3660)),
        pb.ActiveSession(session_id="t", run_id="s3", state=pb.RUN_STATE_RUNNING, attempt=1),  # its begin trimmed
    ]  # fmt: skip
    console = Console(record=True, force_terminal=True, width=120)
    console.print(sessions_table(sessions, now=_NOW))
    header, *rows = [" ".join(line.split()) for line in console.export_text().splitlines()]
    assert header == "session agent state attempt run started age"
    assert [re.sub(r"\d\d:\d\d:\d\d", "HH:MM:SS", row) for row in rows] == [
        "q a queued - rrrrrrrr HH:MM:SS 59s",
        "r b running 2 s1 HH:MM:SS 1m 00s",
        "w c waiting for input - s2 HH:MM:SS 1h 01m",
        "t ? running 1 s3 ? ?",
    ]
