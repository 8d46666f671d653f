"""The monitor's arithmetic: live figures against scikit-learn, the bounded join, agreement,
PSI, and the rollback rules."""

from __future__ import annotations

import math
import random

import pytest
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.preprocessing import MultiLabelBinarizer

from monitor.drift import LabelMix, psi
from monitor.quality import Agreement, Join, figures
from monitor.rollback import judge
from monitor.settings import MonitorSettings

LABELS = ["acq", "crude", "earn", "grain", "trade"]


def random_pairs(seed: int, count: int) -> list[tuple[frozenset[str], frozenset[str]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        truth = frozenset(rng.sample(LABELS, rng.randint(1, 2)))
        predicted = frozenset(rng.sample(LABELS, rng.randint(0, 3)))
        pairs.append((truth, predicted))
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_figures_match_scikit_learn(seed: int) -> None:
    pairs = random_pairs(seed, 300)
    binarizer = MultiLabelBinarizer(classes=LABELS)
    truth = binarizer.fit_transform([sorted(t) for t, _ in pairs])
    predicted = binarizer.transform([sorted(p) for _, p in pairs])
    got = figures(pairs)
    assert got.count == 300
    assert got.micro_f1 == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert got.macro_f1 == pytest.approx(
        f1_score(truth, predicted, average="macro", zero_division=0)
    )
    for index, label in enumerate(LABELS):
        expected_p = precision_score(truth[:, index], predicted[:, index], zero_division=0)
        expected_r = recall_score(truth[:, index], predicted[:, index], zero_division=0)
        assert got.precision[label] == pytest.approx(expected_p)
        assert got.recall[label] == pytest.approx(expected_r)


def test_the_join_pairs_halves_in_either_order_per_version() -> None:
    join = Join(window=100, max_pending=100)
    join.prediction("a", 1, ["earn"])  # prediction first
    join.labelled("a", ["earn"])
    join.labelled("b", ["acq"])  # label first
    join.prediction("b", 1, ["crude"])
    join.prediction("b", 2, ["acq"])  # a second version scores the same article later
    assert join.joined == {1: 2, 2: 1}
    assert join.figures(1).micro_f1 == pytest.approx(0.5)  # 1 tp, 1 fp, 1 fn
    assert join.figures(2).micro_f1 == 1.0


def test_memory_is_bounded_when_feedback_never_comes() -> None:
    join = Join(window=50, max_pending=1000)
    for index in range(20_000):
        join.prediction(f"a{index}", 1, ["earn"])
    for index in range(5_000):
        join.labelled(f"l{index}", ["earn"])
    waiting_predictions, waiting_labels = join.pending
    assert waiting_predictions == 1000 and waiting_labels == 1000
    assert join.evicted == 19_000 + 4_000
    for index in range(19_900, 20_000):  # the newest still join
        join.labelled(f"a{index}", ["earn"])
    assert join.joined == {1: 100}
    assert join.figures(1).count == 50  # the window holds the last 50


def test_agreement_counts_shared_articles_and_flips() -> None:
    agreement = Agreement(window=100, max_pending=100)
    assert agreement.prediction("a", 1, ["earn"]) == []
    assert agreement.prediction("a", 2, ["earn"]) == [(1, frozenset())]
    agreement.prediction("b", 1, ["earn"])
    assert agreement.prediction("b", 2, ["acq"]) == [(1, frozenset({"earn", "acq"}))]
    assert agreement.share(2, 1) == (0.5, 2)


def test_psi_by_hand_and_the_label_mix_window() -> None:
    assert psi({"a": 50, "b": 50}, {"a": 0.5, "b": 0.5}) == 0.0
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi({"a": 80, "b": 20}, {"a": 0.5, "b": 0.5}) == pytest.approx(expected)
    assert psi({"a": 10}, {"a": 0.5, "b": 0.5}) > 2  # a label never predicted stays finite
    mix = LabelMix(window=3)
    for labels in (["a"], ["a"], ["b"], ["b"], ["b"]):
        mix.add(1, frozenset(labels))
    assert +mix.counts[1] == {"b": 3}


def settings(**values: object) -> MonitorSettings:
    return MonitorSettings(min_labelled=100, min_shared=100, **values)  # type: ignore[arg-type]


def test_judge_rolls_back_only_with_enough_evidence_of_worse_quality() -> None:
    join = Join(window=1000, max_pending=1000)
    agreement = Agreement(window=1000, max_pending=1000)
    for index in range(150):
        join.labelled(f"old{index}", ["earn"])
        join.prediction(f"old{index}", 1, ["earn"])
    for index in range(99):
        join.labelled(f"new{index}", ["earn"])
        join.prediction(f"new{index}", 2, [])
    assert judge(2, 1, join, agreement, settings()) is None  # 99 < min_labelled
    join.labelled("new99", ["earn"])
    join.prediction("new99", 2, [])
    verdict = judge(2, 1, join, agreement, settings())
    assert verdict is not None and "micro-F1" in verdict.reason
    assert judge(1, 2, join, agreement, settings()) is None  # the better one stays


def test_judge_rolls_back_when_agreement_collapses() -> None:
    join = Join(window=1000, max_pending=1000)
    agreement = Agreement(window=1000, max_pending=1000)
    for index in range(120):
        agreement.prediction(f"a{index}", 1, ["earn"])
        agreement.prediction(f"a{index}", 2, ["earn"] if index < 40 else ["acq"])
    verdict = judge(2, 1, join, agreement, settings(min_agreement=0.5))
    assert verdict is not None and "33.3% of 120" in verdict.reason
    assert judge(2, 1, join, agreement, settings(min_agreement=0.3)) is None
