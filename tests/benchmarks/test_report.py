"""The benchmark suite: ``python -m benchmarks --smoke`` writes a well-formed report.

Timings are never asserted: the report's shape is (every section, a verdict per target, the
plots it links). The smoke size runs every benchmark with the toy model in well under a
minute against the session's Kafka.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.model_only import Cell, padding_ratio
from common.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "## Targets",
    "## 1. Model only",
    "## 2. The client's ceiling",
    "## 3. End to end: one worker",
    "## 4. The naive loop",
    "## 5. Scale-out",
    "## 6. Memory",
    "## What the numbers say",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_padding_ratio_counts_the_steps_each_layout_runs() -> None:
    """Lengths 2 and 4 in one batch: padded runs 8 steps for 6 real ones; packed runs 6."""
    batch = [[[1, 1], [1, 1, 1, 1]]]
    assert padding_ratio(Cell("padded", 2, batch)) == pytest.approx(0.25)
    assert padding_ratio(Cell("packed", 2, batch)) == 0.0


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_run_writes_every_section_a_verdict_per_target_and_the_plots(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    output = tmp_path / "docs" / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env["TAGSTREAM_KAFKA_BOOTSTRAP"] = kafka_settings.bootstrap
    if "TAGSTREAM_CACHE" in os.environ:
        env["TAGSTREAM_CACHE"] = os.environ["TAGSTREAM_CACHE"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    positions = [report.find(section) for section in SECTIONS]
    assert -1 not in positions, [s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "sections are in order"
    targets = report.split("## Targets", 1)[1].split("## 1.", 1)[0]
    verdicts = re.findall(r"\| (met|\*\*not met\*\*) \|$", targets, flags=re.MULTILINE)
    assert len(verdicts) == 5, targets
    for row in ("| command |", "| date |", "| CPU |", "| GPU |"):
        assert row in report
    images = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report)
    assert len(images) == 3
    for image in images:
        assert (output.parent / image).read_bytes()[:8] == PNG_MAGIC
    assert not re.search(r"\bnan\b", report), "every figure is a number"
