"""Settings of the live-quality monitor (``TAGSTREAM_MONITOR_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from common.settings import settings_config


class MonitorSettings(BaseSettings):
    """What the monitor reads, how much it keeps, and when it rolls production back."""

    model_config = settings_config("TAGSTREAM_MONITOR_")

    predictions_topic: str = Field(default="articles.predictions", min_length=1)
    labelled_topic: str = Field(default="articles.labelled", min_length=1)
    shadow_topic: str | None = Field(default=None, min_length=1)
    """Shadow predictions (``TAGSTREAM_WORKER_SHADOW_TOPIC``): joined like the live ones."""
    start: Literal["beginning", "end"] = "end"
    """Where reading starts: ``end`` counts only what comes after the monitor starts."""

    window: int = Field(default=1000, ge=10, le=1_000_000)
    """Labelled articles per version in the rolling figures."""
    max_pending: int = Field(default=100_000, ge=100)
    """Predictions (and labels) waiting for their other half; the oldest go first."""

    auto_rollback: bool = True
    min_labelled: int = Field(default=200, ge=1)
    """Both versions need this many labelled articles in their windows before a comparison."""
    rollback_margin: float = Field(default=0.05, ge=0, le=1)
    """Roll back when production's live micro-F1 is below the previous version's by more."""
    min_agreement: float = Field(default=0.5, ge=0, le=1)
    """Roll back when production agrees with the previous version on fewer label sets."""
    min_shared: int = Field(default=200, ge=1)
    """Articles both versions scored before agreement counts."""
    check_interval_s: float = Field(default=5.0, gt=0)

    metrics_port: int | None = Field(default=9402, ge=0, le=65_535)
    metrics_host: str = "127.0.0.1"
