"""Decision rules tuned on validation: thresholds that raise micro-F1, the at-least-one rule."""

from __future__ import annotations

import numpy as np

from common.metrics import micro_f1
from model.inference import decide
from trainer.thresholds import (
    CANDIDATES,
    best_global_threshold,
    choose_rule,
    fit_candidate,
    tune_rule,
)


def test_micro_f1_counts_over_all_cells() -> None:
    truth = np.array([[1, 0], [1, 1]], dtype=np.float32)
    predicted = np.array([[True, True], [False, True]])
    assert micro_f1(truth, predicted) == 2 * 2 / (3 + 3)
    assert micro_f1(np.zeros((2, 2), np.float32), np.zeros((2, 2), bool)) == 0.0


def test_decide_adds_the_top_label_only_to_empty_rows() -> None:
    scores = np.array([[0.2, 0.4], [0.9, 0.1]], dtype=np.float32)
    assert decide(scores, [0.5, 0.5]).tolist() == [[False, False], [True, False]]
    assert decide(scores, [0.5, 0.5], at_least_one=True).tolist() == [[False, True], [True, False]]


def test_per_label_thresholds_follow_each_labels_score_scale() -> None:
    """Label 0 is separable at 0.7, label 1 at 0.2: one global threshold cannot fit both."""
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 2)) < 0.3).astype(np.float32)
    first = np.where(truth[:, :1] > 0, 0.8, 0.6) + rng.normal(0, 0.02, (400, 1))
    scores = np.hstack([first, np.where(truth[:, 1:] > 0, 0.3, 0.1)]).astype(np.float32)
    _, global_f1 = best_global_threshold(scores, truth)
    rule = tune_rule(scores, truth)
    assert 0.6 < rule.thresholds[0] <= 0.8
    assert 0.1 < rule.thresholds[1] <= 0.3
    assert micro_f1(truth, rule.apply(scores)) == 1.0 > global_f1


def test_rare_labels_keep_the_global_threshold() -> None:
    truth = np.zeros((50, 2), dtype=np.float32)
    truth[:25, 0] = 1
    truth[0, 1] = 1  # one example: too few to tune on
    scores = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    scores[0, 1] = 0.3
    rule = tune_rule(scores, truth, min_positives=3)
    assert rule.thresholds[1] == rule.thresholds[0]


def test_at_least_one_is_chosen_only_when_it_helps_on_validation() -> None:
    """Rows 0-2 are confident with two distractors at 0.4; rows 3-5 have their true label on
    top but only at 0.25. No single threshold gets both; the top-label rule does."""
    truth = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    scores = np.where(truth > 0, 0.9, 0.4).astype(np.float32)
    scores[3:] = np.where(truth[3:] > 0, 0.25, 0.05)
    rule = tune_rule(scores, truth, min_positives=99)
    assert rule.at_least_one
    assert micro_f1(truth, rule.apply(scores)) == 1.0
    assert not tune_rule(np.where(truth > 0, 0.9, 0.1).astype(np.float32), truth).at_least_one


def test_choose_rule_prefers_what_holds_up_on_unseen_halves() -> None:
    """Per-label thresholds fitted to noise look better in-sample; choose_rule sees through it."""
    rng = np.random.default_rng(3)
    truth = (rng.random((300, 30)) < 0.1).astype(np.float32)
    scores = np.clip(truth * 0.3 + rng.normal(0.35, 0.12, truth.shape), 0, 1).astype(np.float32)
    rule, held_out = choose_rule(scores, truth, min_positives=4)
    assert set(held_out) == {c.name for c in CANDIDATES}
    assert rule.name == max(held_out, key=lambda name: held_out[name]) == "global"
    in_sample = {
        c.name: micro_f1(truth, fit_candidate(scores, truth, c, min_positives=4).apply(scores))
        for c in CANDIDATES
    }
    assert in_sample["per_label"] > in_sample["global"]


def test_choose_rule_keeps_per_label_thresholds_when_labels_really_differ() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 2)) < 0.3).astype(np.float32)
    first = np.where(truth[:, :1] > 0, 0.8, 0.6) + rng.normal(0, 0.02, (400, 1))
    scores = np.hstack([first, np.where(truth[:, 1:] > 0, 0.3, 0.1)]).astype(np.float32)
    rule, _ = choose_rule(scores, truth)
    assert rule.name.startswith("per_label")
    assert micro_f1(truth, rule.apply(scores)) == 1.0
