"""Articles to training tensors: encoded sequences, label matrices, length-bucketed batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from model.encoder import TextEncoder
from model.torch_runtime import pad
from schemas import LabelledArticle

POOL_BATCHES = 50
"""Batches drawn from one shuffled pool that is sorted by length before cutting."""


@dataclass(frozen=True)
class EncodedSplit:
    """Token ids and a 0/1 label matrix ``[n, n_labels]`` for one split."""

    sequences: list[list[int]]
    targets: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True)
class Batch:
    """Padded ids, lengths and targets of one training step."""

    ids: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor


def label_matrix(
    articles: Sequence[LabelledArticle], labels: Sequence[str]
) -> npt.NDArray[np.float32]:
    """``[n, len(labels)]`` with 1 where the article has the label; unknown labels are ignored."""
    column = {label: j for j, label in enumerate(labels)}
    matrix = np.zeros((len(articles), len(labels)), dtype=np.float32)
    for row, article in enumerate(articles):
        for label in article.labels:
            if label in column:
                matrix[row, column[label]] = 1.0
    return matrix


def encode_split(
    encoder: TextEncoder, articles: Sequence[LabelledArticle], labels: Sequence[str]
) -> EncodedSplit:
    """Encode each article's text and build its label row."""
    return EncodedSplit(encoder.encode([a.text for a in articles]), label_matrix(articles, labels))


def with_title_copies(articles: Sequence[LabelledArticle]) -> list[LabelledArticle]:
    """``articles`` plus a title-only copy of each that has both a title and a body: some
    news arrives as a headline alone, and the model should not need the body."""
    copies = [
        a.model_copy(update={"id": f"{a.id}#title", "body": ""})
        for a in articles
        if a.title.strip() and a.body.strip()
    ]
    return [*articles, *copies]


def epoch_batches(
    split: EncodedSplit,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """This rank's batches for ``epoch``: similar lengths within a batch, order shuffled.

    Every rank computes the same batch list from ``(seed, epoch)`` and takes every
    ``world_size``-th batch, trimmed so that all ranks run the same number of steps.
    """
    plan = batch_plan(
        [len(s) for s in split.sequences], batch_size, np.random.default_rng([seed, epoch])
    )
    steps = len(plan) // world_size if world_size > 1 else len(plan)
    for indices in plan[rank::world_size][:steps]:
        ids, lengths = pad([split.sequences[i] for i in indices])
        yield Batch(ids, lengths, torch.from_numpy(split.targets[indices]))


def batch_plan(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Shuffle, sort pools of ``POOL_BATCHES`` batches by length, cut, shuffle the batches."""
    order = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    plan: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool].tolist(), key=lengths.__getitem__)
        plan.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [plan[i] for i in rng.permutation(len(plan))]


def padded_tokens(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> int:
    """Tokens a plan computes including padding (for comparing plans)."""
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)
