"""F1 defined once: the same figures as scikit-learn's, on counts and on matrices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from common.metrics import f1, macro_f1, micro_f1, per_label_f1


@pytest.fixture
def matrices() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    truth = rng.random((200, 12)) < 0.15
    truth[:, 5] = False  # a label that never occurs
    predicted = np.where(rng.random((200, 12)) < 0.8, truth, ~truth)
    return truth, predicted


def test_f1_from_counts_and_nothing_at_all() -> None:
    assert f1(3, 1, 2) == pytest.approx(6 / 9)
    assert f1(0, 0, 0) == 0.0


def test_micro_f1_equals_scikit_learn(matrices: tuple[np.ndarray, np.ndarray]) -> None:
    truth, predicted = matrices
    assert micro_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert micro_f1(truth.astype(np.float32), predicted) == micro_f1(truth, predicted)
    assert micro_f1(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 0.0


def test_macro_f1_averages_the_labels_that_occur(matrices: tuple[np.ndarray, np.ndarray]) -> None:
    truth, predicted = matrices
    present = np.flatnonzero(truth.any(axis=0))
    expected = f1_score(truth[:, present], predicted[:, present], average="macro")
    assert macro_f1(truth, predicted) == pytest.approx(expected)
    assert per_label_f1(truth, predicted) == pytest.approx(
        f1_score(truth, predicted, average=None, zero_division=0)
    )
