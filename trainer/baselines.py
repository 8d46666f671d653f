"""TF-IDF baselines on the same split: one-vs-rest logistic regression and a linear SVM.

Both are fitted on the training split; the regularisation strength ``C`` and one global
decision threshold are chosen on the validation split (never on test), as for the BiLSTM.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from common.metrics import micro_f1
from schemas import LabelledArticle
from trainer.data import label_matrix

Matrix = npt.NDArray[np.float32]

LOGISTIC_C = (16.0, 64.0, 256.0)
SVM_C = (0.5, 1.0, 2.0, 4.0, 8.0)
LOGISTIC_THRESHOLDS = np.round(np.arange(0.1, 0.61, 0.05), 2)
SVM_THRESHOLDS = np.round(np.arange(-0.5, 0.21, 0.05), 2)


@dataclass(frozen=True)
class Baseline:
    """A fitted baseline: its chosen settings and its scores on the evaluation articles."""

    name: str
    settings: dict[str, float]
    scores: Matrix
    predicted: npt.NDArray[np.bool_]
    seconds: float


def vectorizer() -> TfidfVectorizer:
    """Word unigrams and bigrams, sublinear term frequency, words seen in 2+ documents."""
    return TfidfVectorizer(
        ngram_range=(1, 2),
        min_df=2,
        sublinear_tf=True,
        lowercase=True,
        max_features=200_000,
        dtype=np.float32,
    )


def fit_baselines(
    train: Sequence[LabelledArticle],
    validation: Sequence[LabelledArticle],
    evaluate: Sequence[LabelledArticle],
    labels: Sequence[str],
) -> list[Baseline]:
    """Both baselines, tuned on ``validation``, scored on ``evaluate``."""
    tfidf = vectorizer()
    x_train = tfidf.fit_transform([a.text for a in train])
    x_validation = tfidf.transform([a.text for a in validation])
    x_evaluate = tfidf.transform([a.text for a in evaluate])
    y_train = label_matrix(train, labels).astype(np.int8)
    y_validation = label_matrix(validation, labels)
    keep = np.flatnonzero(y_train.sum(axis=0) > 0)  # a label absent from train cannot be fit
    data = (x_train, y_train[:, keep], x_validation, y_validation[:, keep], x_evaluate)
    n = len(labels)
    return [
        _tuned(
            "tfidf_logistic_regression",
            _logistic,
            LOGISTIC_C,
            LOGISTIC_THRESHOLDS,
            data=data,
            keep=keep,
            n_labels=n,
        ),
        _tuned("tfidf_linear_svm", _svm, SVM_C, SVM_THRESHOLDS, data=data, keep=keep, n_labels=n),
    ]


def _logistic(c: float) -> Any:
    return OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", max_iter=1000))


def _svm(c: float) -> Any:
    return OneVsRestClassifier(LinearSVC(C=c, max_iter=5000))


def _scores(model: Any, x: Any) -> Matrix:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(x), dtype=np.float32)
    return np.asarray(model.decision_function(x), dtype=np.float32)


def _tuned(
    name: str,
    make: Callable[[float], Any],
    grid: Sequence[float],
    thresholds: npt.NDArray[np.floating[Any]],
    *,
    data: tuple[Any, ...],
    keep: npt.NDArray[np.intp],
    n_labels: int,
) -> Baseline:
    x_train, y_train, x_validation, y_validation, x_evaluate = data
    started = time.perf_counter()
    best: tuple[float, float, float, Any] | None = None
    for c in grid:
        model = make(c).fit(x_train, y_train)
        scores = _scores(model, x_validation)
        for threshold in thresholds:
            f1 = micro_f1(y_validation, scores >= threshold)
            if best is None or f1 > best[0]:
                best = (f1, c, float(threshold), model)
    assert best is not None
    _, c, threshold, model = best
    scores = np.full(
        (x_evaluate.shape[0], n_labels), float(np.min(thresholds)) - 1.0, dtype=np.float32
    )
    scores[:, keep] = _scores(model, x_evaluate)
    return Baseline(
        name=name,
        settings={"C": c, "threshold": threshold},
        scores=scores,
        predicted=scores >= threshold,
        seconds=time.perf_counter() - started,
    )
