"""Decision rules tuned on the validation split: thresholds and "at least one label".

Four candidate rules: one global threshold, or per-label thresholds; each with or without
the at-least-one rule (an article with no label over threshold gets its top label).
Per-label thresholds maximise *micro*-F1 (the headline metric) by coordinate ascent: start
from the best global threshold, then for each label with at least ``min_positives``
validation examples pick the threshold that maximises the micro-F1 of the whole matrix with
the other labels fixed; rarer labels keep the global one.

Per-label thresholds always look better on the data they were tuned on, so
:func:`choose_rule` picks a candidate by how it does on data it was *not* tuned on:
repeated split halves of the validation split, tune on one half, score the other. The
winner is then fitted on the whole validation split. The test split is never involved.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from common.metrics import micro_f1
from model.inference import decide

GRID = np.round(np.arange(0.05, 0.951, 0.025), 3).astype(np.float32)

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DecisionRule:
    """Per-label thresholds and whether an article always gets its top label."""

    thresholds: npt.NDArray[np.float32]
    at_least_one: bool
    name: str = "per_label"

    def apply(self, scores: Matrix) -> npt.NDArray[np.bool_]:
        """Boolean decisions ``[n, n_labels]``."""
        return decide(scores, self.thresholds, self.at_least_one)


def best_global_threshold(scores: Matrix, targets: Matrix) -> tuple[float, float]:
    """The grid threshold with the best micro-F1 for all labels alike, and that F1."""
    results = [(micro_f1(targets, scores >= t), float(t)) for t in GRID]
    f1, threshold = max(results, key=lambda r: (r[0], -abs(r[1] - 0.5)))
    return threshold, f1


def tune_rule(
    scores: Matrix, targets: Matrix, *, min_positives: int = 3, passes: int = 2
) -> DecisionRule:
    """Thresholds by coordinate ascent on micro-F1, then the at-least-one rule if it helps."""
    threshold, _ = best_global_threshold(scores, targets)
    thresholds = np.full(scores.shape[1], threshold, dtype=np.float32)
    truth = targets > 0.5
    tunable = np.flatnonzero(truth.sum(axis=0) >= min_positives)
    for _ in range(passes):
        for label in tunable:
            thresholds[label] = _best_for_label(scores, truth, thresholds, int(label))
    with_rule = micro_f1(targets, decide(scores, thresholds, True))
    without = micro_f1(targets, decide(scores, thresholds))
    return DecisionRule(thresholds, at_least_one=with_rule > without)


def _best_for_label(
    scores: Matrix, truth: npt.NDArray[np.bool_], thresholds: Matrix, label: int
) -> float:
    """Threshold for ``label`` maximising micro-F1 with every other label's fixed."""
    others = np.delete(np.arange(scores.shape[1]), label)
    predicted = scores[:, others] >= thresholds[others]
    tp_rest = float(np.logical_and(predicted, truth[:, others]).sum())
    count_rest = float(predicted.sum() + truth[:, others].sum())
    column, positives = scores[:, label][:, None], truth[:, label][:, None]
    hits = column >= GRID[None, :]
    tp = tp_rest + np.logical_and(hits, positives).sum(axis=0)
    # common.metrics.micro_f1 for every grid threshold at once
    f1 = 2 * tp / (count_rest + hits.sum(axis=0) + positives.sum())
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(GRID[best[np.argmin(np.abs(GRID[best] - thresholds[label]))]])


@dataclass(frozen=True)
class Candidate:
    """One way to make a decision rule."""

    name: str
    per_label: bool
    at_least_one: bool


CANDIDATES = (
    Candidate("global", per_label=False, at_least_one=False),
    Candidate("global+top_label", per_label=False, at_least_one=True),
    Candidate("per_label", per_label=True, at_least_one=False),
    Candidate("per_label+top_label", per_label=True, at_least_one=True),
)


def fit_candidate(
    scores: Matrix, targets: Matrix, candidate: Candidate, *, min_positives: int
) -> DecisionRule:
    """The rule ``candidate`` describes, tuned on ``scores``/``targets``."""
    if candidate.per_label:
        rule = tune_rule(scores, targets, min_positives=min_positives)
    else:
        threshold, _ = best_global_threshold(scores, targets)
        rule = DecisionRule(np.full(scores.shape[1], threshold, dtype=np.float32), False)
    return replace(rule, at_least_one=candidate.at_least_one, name=candidate.name)


def choose_rule(
    scores: Matrix, targets: Matrix, *, repeats: int = 5, min_positives: int = 10, seed: int = 0
) -> tuple[DecisionRule, dict[str, float]]:
    """The candidate with the best held-out micro-F1 over ``repeats`` split halves (ties go
    to the simpler, earlier candidate), fitted on everything; and each candidate's mean."""
    rng = np.random.default_rng(seed)
    held_out: dict[str, list[float]] = {c.name: [] for c in CANDIDATES}
    for _ in range(repeats):
        order = rng.permutation(len(scores))
        halves = (order[: len(order) // 2], order[len(order) // 2 :])
        for fit_on, score_on in (halves, halves[::-1]):
            for candidate in CANDIDATES:
                rule = fit_candidate(
                    scores[fit_on],
                    targets[fit_on],
                    candidate,
                    min_positives=max(1, min_positives // 2),
                )
                held_out[candidate.name].append(
                    micro_f1(targets[score_on], rule.apply(scores[score_on]))
                )
    means = {name: float(np.mean(values)) for name, values in held_out.items()}
    best = max(CANDIDATES, key=lambda c: (round(means[c.name], 6), -CANDIDATES.index(c)))
    return fit_candidate(scores, targets, best, min_positives=min_positives), means
