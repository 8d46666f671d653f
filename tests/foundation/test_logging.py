"""Logs go to whatever stderr is now, even after the stream a logger first used was closed."""

from __future__ import annotations

import io
import json
import sys

import pytest

from common.logging import configure, get_logger


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
