"""Logs go to whatever stderr is now, even after the stream a logger first used was closed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.logging import configure, get_logger

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
LINES = 4000


def test_a_cached_logger_follows_stderr_after_the_old_stream_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure("INFO", json=True)
    log = get_logger("test")
    log.info("one")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("two", answer=42)
    line = json.loads(second.getvalue())
    assert line["event"] == "two" and line["answer"] == 42 and line["component"] == "test"


def test_processes_sharing_one_unbuffered_stderr_never_split_a_line(tmp_path: Path) -> None:
    """A supervisor's workers share its stderr; each record must reach it in one write.

    With ``PYTHONUNBUFFERED=1`` a record and its newline written separately interleave with
    the other processes' records, and a log reader sees two records on one line.
    """
    script = (
        "import os, sys, time\n"
        "from common.logging import configure, get_logger\n"
        "configure('INFO', json=True)\n"
        "log = get_logger('test')\n"
        "deadline = time.monotonic() + 60\n"
        "while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:\n"
        "    time.sleep(0.001)\n"
        "for i in range(LINES):\n"
        "    log.info('line', writer=sys.argv[1], i=i, padding='x' * 200)\n"
    )
    script = script.replace("LINES", str(LINES))
    out = tmp_path / "shared.log"
    go = tmp_path / "go"
    with out.open("ab") as shared:
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(n), str(go)],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
                stderr=shared,
            )
            for n in range(WRITERS)
        ]
        time.sleep(1.0)
        go.touch()
        for writer in writers:
            assert writer.wait(timeout=120) == 0
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == WRITERS * LINES
    assert {(r["writer"], r["i"]) for r in records} == {
        (str(n), i) for n in range(WRITERS) for i in range(LINES)
    }
