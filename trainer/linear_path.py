"""The bag-of-words path of a wide & deep network, fitted after the LSTM.

Trained jointly with the LSTM, the linear path memorised the training articles (its 1.4 M
weights learn far faster than the LSTM) and lost on the test split what it gained on
validation. So it is fitted on its own, as a convex problem: one-vs-rest linear SVMs on the
same TF-IDF vectors the network computes (``model.network.tfidf``), over the training split;
then its margins are added to the LSTM's logits with a weight, one for the frequent labels
and one for the rare ones (fewer than :data:`RARE_BELOW` positive rows), and the SVM's ``C``
and the two weights are chosen together on the validation split by micro-F1 (weights of 0
keep the LSTM alone). The result is folded into the network (``wide.weight`` and the head's
bias), so a worker scores it like any other artifact.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy.sparse import csr_matrix
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from model.network import BiLSTMClassifier
from model.torch_runtime import network_scores
from trainer.data import EncodedSplit
from trainer.thresholds import best_global_threshold

C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
WEIGHT_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 16.0, 24.0)
RARE_BELOW = 100
"""Labels with fewer positive rows than this in the split the path is fitted on (title copies
included, so about 50 articles) take the rare labels' weight: the SVM's margins are worth
less, relative to the LSTM, on the labels with few examples (docs/model.md, W17)."""


@dataclass(frozen=True)
class LinearPath:
    """The chosen SVM strength, the weights of its margins (frequent and rare labels), how
    many labels are rare, and validation micro-F1."""

    c: float
    weight: float
    rare_weight: float
    rare_labels: int
    validation_f1: float


def tfidf_rows(sequences: Sequence[Sequence[int]], idf: npt.NDArray[np.float32]) -> csr_matrix:
    """``[n, vocab]`` sparse TF-IDF vectors, the same numbers as ``model.network.tfidf``."""
    indptr, indices, values = [0], [], []
    for sequence in sequences:
        words, counts = np.unique(np.asarray(sequence, dtype=np.int64), return_counts=True)
        weights = (1.0 + np.log(counts)) * idf[words]
        norm = float(np.linalg.norm(weights))
        indices.append(words)
        values.append(weights / norm if norm > 0 else weights)
        indptr.append(indptr[-1] + len(words))
    return csr_matrix(
        (np.concatenate(values), np.concatenate(indices), np.asarray(indptr)),
        shape=(len(sequences), len(idf)),
        dtype=np.float32,
    )


def fit_linear_path(
    network: BiLSTMClassifier, train: EncodedSplit, validation: EncodedSplit, device: torch.device
) -> LinearPath:
    """Fit the linear path into ``network`` (in place); what was chosen."""
    idf = network.idf.detach().cpu().numpy()
    x_train, x_validation = tfidf_rows(train.sequences, idf), tfidf_rows(validation.sequences, idf)
    positives = train.targets.sum(axis=0)
    keep = np.flatnonzero(positives > 0)
    rare = positives < RARE_BELOW
    network.eval()
    lstm = _logits(network_scores(network, validation.sequences, device=device))
    best: tuple[float, float, float, float, Any] | None = None
    for c in C_GRID:
        model = OneVsRestClassifier(LinearSVC(C=c, max_iter=5000, random_state=0))
        model.fit(x_train, train.targets[:, keep].astype(np.int8))
        margins = np.zeros_like(lstm)
        margins[:, keep] = model.decision_function(x_validation)
        for weight, rare_weight in itertools.product(WEIGHT_GRID, repeat=2):
            weights = np.where(rare, rare_weight, weight)
            _, f1 = best_global_threshold(_sigmoid(lstm + weights * margins), validation.targets)
            if best is None or f1 > best[0] + 1e-9:
                best = (f1, c, weight, rare_weight, model)
    assert best is not None
    f1, c, weight, rare_weight, model = best
    _fold_in(network, model, keep, np.where(rare, rare_weight, weight)[keep])
    return LinearPath(
        c=c,
        weight=weight,
        rare_weight=rare_weight,
        rare_labels=int(rare[keep].sum()),
        validation_f1=f1,
    )


def _fold_in(
    network: BiLSTMClassifier,
    model: Any,
    keep: npt.NDArray[np.intp],
    weights: npt.NDArray[np.float64],
) -> None:
    """Each kept label's SVM, times its weight, into ``wide.weight`` and the head's bias."""
    coefficients = np.stack([e.coef_.reshape(-1) for e in model.estimators_])
    intercepts = np.asarray([float(np.ravel(e.intercept_)[0]) for e in model.estimators_])
    with torch.no_grad():
        wide, bias = network.wide.weight, network.head.bias
        wide.zero_()
        wide[torch.from_numpy(keep)] = torch.from_numpy(weights[:, None] * coefficients).to(wide)
        bias[torch.from_numpy(keep)] += torch.from_numpy(weights * intercepts).to(bias)


def _logits(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
