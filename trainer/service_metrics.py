"""What the trainer service reports: its Prometheus metrics, and how a cycle ended
(:class:`CycleResult`) with the one log line and the metrics made from it."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from common.logging import get_logger

log = get_logger("trainer")

CYCLES = Counter("tagstream_trainer_cycles_total", "Training cycles by outcome", ["outcome"])
CYCLE_SECONDS = Histogram(
    "tagstream_trainer_cycle_seconds",
    "Duration of a training cycle",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 3600),
)
STORED = Counter("tagstream_trainer_examples_stored_total", "Labelled examples stored")
REJECTED = Counter(
    "tagstream_trainer_records_rejected_total",
    "Labelled records that failed validation (logged with their coordinates)",
)
SCORE = Gauge("tagstream_trainer_last_micro_f1", "Holdout micro-F1 of the last cycle", ["model"])


@dataclass(frozen=True)
class CycleResult:
    """How one cycle ended: one log line and the metrics are made from it."""

    promoted: bool
    reason: str
    version: int | None
    candidate_f1: float
    production_f1: float | None
    examples: int
    feedback: int
    seconds: float
    candidate_macro_f1: float = 0.0
    production_macro_f1: float | None = None
    alias_moved: bool = False
    """Published, but the alias moved during the cycle (a manual promote or rollback), so
    the compare-and-set promote was refused and the operator's choice stands."""


def record_cycle(result: CycleResult) -> None:
    """The one log line and the metrics of a finished cycle."""
    outcome = "promoted" if result.promoted else "rejected"
    CYCLES.labels("alias_moved" if result.alias_moved else outcome).inc()
    CYCLE_SECONDS.observe(result.seconds)
    SCORE.labels("candidate").set(result.candidate_f1)
    if result.production_f1 is not None:
        SCORE.labels("production").set(result.production_f1)
    log.info(
        "cycle",
        promoted=result.promoted,
        reason=result.reason,
        version=result.version,
        candidate_micro_f1=round(result.candidate_f1, 4),
        candidate_macro_f1=round(result.candidate_macro_f1, 4),
        production_macro_f1=None
        if result.production_macro_f1 is None
        else round(result.production_macro_f1, 4),
        production_micro_f1=None
        if result.production_f1 is None
        else round(result.production_f1, 4),
        examples=result.examples,
        feedback=result.feedback,
        seconds=round(result.seconds, 1),
    )
