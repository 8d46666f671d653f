"""The alert rules, checked and unit-tested by Prometheus's own promtool (Debian's
``prometheus`` package, installed by set-up)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run `make setup` (Debian package prometheus)")
    result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_alert_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES / "alerts.yml"))


def test_the_alerts_fire_on_the_series_they_are_meant_for_and_not_before() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULES / "alerts.test.yml"))
