"""Output drift: the labels a version predicts against the label priors it was trained on.

The population stability index compares two distributions over the same bins:
``PSI = sum((p - q) * ln(p / q))``, with ``p`` the share of predicted labels that are label i
and ``q`` the same share in the training data. Under 0.1 is usually read as stable, over 0.25
as a shift worth a look (deploy/prometheus/alerts.yml alerts past 0.25).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping

EPSILON = 1e-4
"""Floor for an empty share, so a label never predicted (or never seen) stays finite."""


def psi(observed: Mapping[str, int], priors: Mapping[str, float]) -> float:
    """PSI of label counts ``observed`` against ``priors`` (shares or counts; normalised)."""
    labels = sorted(set(priors) | set(observed))
    total_observed = sum(observed.values())
    total_prior = sum(priors.values())
    if not labels or total_observed == 0 or total_prior <= 0:
        return 0.0
    value = 0.0
    for label in labels:
        p = max(observed.get(label, 0) / total_observed, EPSILON)
        q = max(priors.get(label, 0.0) / total_prior, EPSILON)
        value += (p - q) * math.log(p / q)
    return value


class LabelMix:
    """The labels each version predicted, over its last ``window`` predictions."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._recent: dict[int, deque[frozenset[str]]] = {}
        self.counts: dict[int, Counter[str]] = {}

    def add(self, version: int, labels: frozenset[str]) -> None:
        recent = self._recent.setdefault(version, deque())
        counts = self.counts.setdefault(version, Counter())
        recent.append(labels)
        counts.update(labels)
        if len(recent) > self._window:
            counts.subtract(recent.popleft())
