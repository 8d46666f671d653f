"""F1, the project's quality measure, defined once: trainer, evaluation, tallies and the monitor.

``f1`` works on counts (the monitor keeps counts over a rolling window); ``micro_f1`` and
``macro_f1`` on ``[documents, labels]`` matrices of truth and decisions. Only numpy, so every
component can import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def f1(tp: float, fp: float, fn: float) -> float:
    """``2 tp / (2 tp + fp + fn)``; 0 when there is nothing true and nothing predicted."""
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def micro_f1(truth: npt.NDArray[Any], predicted: npt.NDArray[np.bool_]) -> float:
    """Micro-averaged F1 over every (document, label) cell; ``truth`` is boolean or 0/1."""
    actual = np.asarray(truth) > 0.5
    tp = float(np.logical_and(actual, predicted).sum())
    return f1(tp, float(predicted.sum()) - tp, float(actual.sum()) - tp)


def per_label_f1(truth: npt.NDArray[Any], predicted: npt.NDArray[np.bool_]) -> npt.NDArray[Any]:
    """F1 of each label (column); 0 for a label neither true nor predicted."""
    actual = np.asarray(truth) > 0.5
    tp = np.logical_and(actual, predicted).sum(axis=0)
    fp, fn = predicted.sum(axis=0) - tp, actual.sum(axis=0) - tp
    return np.array([f1(*counts) for counts in zip(tp, fp, fn, strict=True)])


def macro_f1(truth: npt.NDArray[Any], predicted: npt.NDArray[np.bool_]) -> float:
    """Mean F1 over the labels that occur in ``truth`` (a label absent there has no F1)."""
    present = np.flatnonzero((np.asarray(truth) > 0.5).sum(axis=0) > 0)
    if not len(present):
        return 0.0
    return float(per_label_f1(np.asarray(truth)[:, present], predicted[:, present]).mean())
