"""What a training cycle reads: the seed, validation and holdout splits, and the feedback.

The holdout and the seed come from the Reuters train split (or one JSON-lines file) by a hash
of the article id: hash bucket 0-9 is validation (``corpus.reuters``), 10-19 the holdout,
20-99 the seed pool. Feedback that repeats a validation or holdout article is left out of
training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import corpus
from corpus.jsonl import read_jsonl
from corpus.reuters import hash_bucket
from schemas import LabelledArticle
from trainer.errors import TrainerError

HOLDOUT_BUCKETS = range(10, 20)
SEED_BUCKETS = range(20, 100)


@dataclass(frozen=True)
class Datasets:
    """What one training cycle reads."""

    seed: list[LabelledArticle]
    validation: list[LabelledArticle]
    holdout: list[LabelledArticle]
    labels: list[str]


def reuters_datasets(seed_fraction: float = 1.0) -> Datasets:
    """Seed, validation and holdout from Reuters-21578 as the module docstring lays out."""
    data = corpus.load()
    seed, holdout, _ = carve(data.train, seed_fraction)
    return Datasets(seed, data.validation, holdout, data.labels)


def jsonl_datasets(path: Path, seed_fraction: float = 1.0) -> Datasets:
    """Seed, validation and holdout carved by id hash from one JSON-lines file of articles."""
    articles = list(read_jsonl(path))
    seed, holdout, validation = carve(articles, seed_fraction)
    labels = sorted({label for article in articles for label in article.labels})
    if not (seed and holdout and validation and labels):
        raise TrainerError(
            f"{path}: too few labelled articles to carve seed, validation and "
            f"holdout ({len(articles)} read)"
        )
    return Datasets(seed, validation, holdout, labels)


def carve(
    articles: Iterable[LabelledArticle], seed_fraction: float
) -> tuple[list[LabelledArticle], list[LabelledArticle], list[LabelledArticle]]:
    """Split by id hash into (seed, holdout, validation) as the module docstring lays out."""
    seed_limit = SEED_BUCKETS.start + round(seed_fraction * len(SEED_BUCKETS))
    seed, holdout, validation = [], [], []
    for article in articles:
        bucket = hash_bucket(article.id.removeprefix("reuters-"))
        if bucket in HOLDOUT_BUCKETS:
            holdout.append(article)
        elif bucket < HOLDOUT_BUCKETS.start:
            validation.append(article)
        elif bucket < seed_limit:
            seed.append(article)
    return seed, holdout, validation


def feedback(examples: Iterable[LabelledArticle], data: Datasets) -> list[LabelledArticle]:
    """The stored examples a cycle trains on: none that repeats a validation or holdout
    article, each with only the labels of ``data``."""
    excluded = {a.id for a in data.validation} | {a.id for a in data.holdout}
    labels = set(data.labels)
    return [
        a.model_copy(update={"labels": [x for x in a.labels if x in labels]})
        for a in examples
        if a.id not in excluded
    ]
