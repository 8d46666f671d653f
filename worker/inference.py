"""Running a model over one batch: one call, input order restored, failures isolated.

The whole batch goes to the model in one call, and the model lays it out: on the CPU sorted by
length and cut into buckets of similar lengths (``model.inference.length_buckets``, at most
``bucket_size`` each) so each forward pass pads little, all of them in one native call with
the ONNX runtime; on CUDA packed. The scores come back in input order and are checked (one row
per input, one column per label). When a call fails (an exception, out of memory, a wrong
shape), its inputs are split in halves and retried until the article that fails on its own is
found: it gets the exception as its result, the others get their scores.

When every input of a batch failed, the model is asked for its warm-up input, which is known
good (:meth:`Model.warm_up`): if that fails too, the fault is the model's, not the articles'
(a sticky CUDA error, a broken runtime), and :attr:`Scored.systemic` says so; the scoring
stage then answers none of the batch (see :mod:`worker.breaker`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.inference import length_buckets
from worker.decoding import Encoder


class Model(Encoder, Protocol):
    """What the loop needs from a classifier (``model.inference.Classifier`` provides it)."""

    @property
    def version(self) -> int: ...

    @property
    def labels(self) -> Sequence[str]: ...

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray: ...

    def decide(self, scores_row: np.ndarray) -> list[tuple[str, float]]: ...

    def decide_rows(self, scores: np.ndarray) -> list[list[tuple[str, float]]]:
        """:meth:`decide` for each row of ``[n, labels]`` scores."""

    def warm_up(self) -> None: ...


Row = np.ndarray | Exception


@dataclass(frozen=True)
class Scored:
    """Per input, in input order: a row of label scores, or the exception it failed with."""

    rows: list[Row]
    real_tokens: int
    padded_tokens: int
    seconds: float
    systemic: Exception | None = None
    """Set when the model failed on known-good input as well: no row is to be answered."""

    @property
    def padding_ratio(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class Scorer:
    """Scores batches with a model; counts the padding of its layout: length buckets on the
    CPU (``bucket_size`` set, as the model was given), else the whole batch."""

    def __init__(self, bucket_size: int | None) -> None:
        if bucket_size is not None and bucket_size < 1:
            raise ValueError(f"bucket_size must be at least 1, not {bucket_size}")
        self.bucket_size = bucket_size

    def groups(self, lengths: list[int]) -> list[list[int]]:
        """Indices per forward pass: similar lengths together, or everything at once."""
        if self.bucket_size is None:
            return [list(range(len(lengths)))] if lengths else []
        return list(length_buckets(lengths, max_items=self.bucket_size))

    def score(self, model: Model, token_ids: Sequence[Sequence[int]]) -> Scored:
        started = time.perf_counter()
        lengths = [len(ids) for ids in token_ids]
        rows: list[Row | None] = [None] * len(token_ids)
        padded = sum(max(lengths[i] for i in g) * len(g) for g in self.groups(lengths))
        if token_ids:
            for index, row in isolate(model, token_ids, list(range(len(token_ids)))):
                rows[index] = row
        assert all(row is not None for row in rows), "every input gets a result"
        done = [r for r in rows if r is not None]
        systemic = probe(model) if done and all(isinstance(r, Exception) for r in done) else None
        return Scored(done, sum(lengths), padded, time.perf_counter() - started, systemic)


def probe(model: Model) -> Exception | None:
    """The exception the model fails with on its own warm-up input (None: it works)."""
    try:
        model.warm_up()
    except Exception as exc:
        return exc
    return None


def isolate(
    model: Model, token_ids: Sequence[Sequence[int]], indices: list[int]
) -> list[tuple[int, Row]]:
    """Scores for ``indices``; halves a failing call until the failing input stands alone."""
    try:
        scores = np.asarray(model.scores([token_ids[i] for i in indices]))
        check_shape(scores, len(indices), len(model.labels))
        return list(zip(indices, scores, strict=True))
    except Exception as exc:
        if len(indices) == 1:
            return [(indices[0], exc)]
        middle = len(indices) // 2
        return isolate(model, token_ids, indices[:middle]) + isolate(
            model, token_ids, indices[middle:]
        )


def check_shape(scores: np.ndarray, inputs: int, labels: int) -> None:
    if scores.shape != (inputs, labels):
        raise ValueError(
            f"model returned scores of shape {scores.shape} for {inputs} inputs and {labels} labels"
        )
