"""How much each benchmark does in each mode: ``smoke`` (the CI test), ``quick``, ``full``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["smoke", "quick", "full"]


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run of the suite."""

    mode: Mode
    batch_sizes: tuple[int, ...]
    model_articles: int
    """Articles scored per model-only measurement (a quarter of it at batch size 1)."""
    repeats: int
    naive_messages: int
    burst: int
    """Articles per maximum-throughput burst through a worker."""
    load_seconds: float
    """How long each offered load (25, 50, 75 % of the maximum) is held."""
    memory_messages: int
    model_sizes: tuple[str, ...]
    train: bool
    """Train the ``fast`` profile when no trained model is cached (about 2 minutes)."""
    loads: tuple[float, ...] = (0.25, 0.5, 0.75)
    worker_batch_size: int = 64
    """The worker's ``max_batch_size`` and ``bucket_size`` (its defaults) in every run."""
    max_wait_ms: float = 20.0


PLANS: dict[Mode, Plan] = {
    "smoke": Plan(
        mode="smoke",
        batch_sizes=(1, 8),
        model_articles=64,
        repeats=1,
        naive_messages=20,
        burst=100,
        load_seconds=0.5,
        memory_messages=50,
        model_sizes=("toy",),
        train=False,
    ),
    "quick": Plan(
        mode="quick",
        batch_sizes=(1, 8, 32, 128, 512),
        model_articles=512,
        repeats=3,
        naive_messages=200,
        burst=2000,
        load_seconds=4.0,
        memory_messages=500,
        model_sizes=("toy", "fast", "full"),
        train=False,
    ),
    "full": Plan(
        mode="full",
        batch_sizes=(1, 8, 32, 128, 512),
        model_articles=2048,
        repeats=5,
        naive_messages=1000,
        burst=6000,
        load_seconds=30.0,
        memory_messages=2000,
        model_sizes=("toy", "fast", "full"),
        train=True,
    ),
}
