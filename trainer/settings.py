"""Settings of the retraining service (``TAGSTREAM_TRAINER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from common.paths import cache_dir
from common.settings import settings_config


def default_store() -> Path:
    return cache_dir() / "trainer" / "examples.db"


class TrainerSettings(BaseSettings):
    """What the trainer consumes, when it retrains, and when it promotes."""

    model_config = settings_config("TAGSTREAM_TRAINER_")

    topic: str = "articles.labelled"
    group_id: str = "tagstream-trainer"
    store_path: Path = Field(default_factory=default_store)
    """SQLite file holding every labelled example received, and the consumer positions."""

    retrain_interval_s: float = Field(default=3600.0, gt=0)
    """Retrain when this long has passed since the last cycle and a new example arrived."""

    retrain_min_examples: int = Field(default=500, ge=1)
    """Retrain as soon as this many new examples arrived, whatever the interval."""

    profile: Literal["fast", "full"] = "fast"
    profile_overrides: dict[str, float | int | bool | str] = Field(default_factory=dict)
    """JSON object of profile settings to change, e.g. ``{"max_epochs": 4, "max_seconds": 600}``."""
    seed_path: Path | None = None
    """A JSON-lines file of LabelledArticles to use as the seed corpus instead of Reuters-21578."""

    seed_fraction: float = Field(default=1.0, gt=0, le=1)
    """Share of the Reuters train split used as seed corpus (the rest may come as feedback)."""

    promotion_margin: float = Field(default=0.005, ge=0, le=1)
    """Promote when candidate micro-F1 >= production micro-F1 - margin on the holdout."""

    gate_history: int = Field(default=3, ge=1, le=20)
    """The candidate is compared with the best of the alias's current version and the
    ``gate_history - 1`` versions it held before (on the same holdout), so quality cannot
    fall by the margin every cycle. 1 compares with the current version only."""

    alias: Literal["production", "canary"] = "production"
    canary_s: float = Field(default=0.0, ge=0, le=86_400)
    """With ``alias`` production: a version that passed the gate serves as ``canary`` for this
    long first (workers with ``TAGSTREAM_WORKER_SHADOW_ALIAS=canary`` shadow-score it and the
    monitor compares it with production), then is promoted. 0 promotes at once."""
    cycle_retry_initial_s: float = Field(default=1.0, gt=0)
    """After a failed cycle (Redis away, a training error), wait this long before the next try."""

    cycle_retry_max_s: float = Field(default=30.0, gt=0)
    """The wait doubles with each failure in a row up to this; a cycle that ends resets it."""

    lock_ttl_s: float = Field(default=60.0, gt=1)
    metrics_port: int = Field(default=9301, ge=0, le=65535)
    """``/metrics``, ``/healthz`` and ``/readyz``; 0 turns the server off."""

    metrics_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    stall_timeout_s: float = Field(default=120.0, gt=0)
    """``/healthz`` fails when the consume loop has not come round for this long."""

    max_body_bytes: int = Field(default=256 * 1024, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
