"""Live quality: labelled feedback joined with predictions, rolling figures per version.

A prediction and its label set meet by article id; each version that predicted an article
is scored on it (the live version, a shadow, a replay). Whichever half arrives first waits in
a bounded, oldest-first buffer (``max_pending`` entries per side), so memory stays bounded
when feedback never comes for most articles. Each version keeps the last ``window`` joined
pairs; its figures are computed from those alone.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from common.metrics import f1

LabelSet = frozenset[str]
MAX_INTERNED = 10_000


@dataclass(frozen=True)
class Figures:
    """Rolling figures of one version over its window."""

    count: int
    micro_f1: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]


def figures(pairs: Iterable[tuple[LabelSet, LabelSet]]) -> Figures:
    """Micro- and macro-F1 and per-label precision and recall of (truth, predicted) pairs.

    Macro-F1 averages over the labels that occur in the truth or the predictions; a label
    never predicted has precision 0 when it occurs in the truth.
    """
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    count = 0
    for truth, predicted in pairs:
        count += 1
        for label in truth & predicted:
            tp[label] = tp.get(label, 0) + 1
        for label in predicted - truth:
            fp[label] = fp.get(label, 0) + 1
        for label in truth - predicted:
            fn[label] = fn.get(label, 0) + 1
    labels = sorted(set(tp) | set(fp) | set(fn))
    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro = f1(total_tp, total_fp, total_fn) if labels else 0.0
    per_label = [f1(tp.get(x, 0), fp.get(x, 0), fn.get(x, 0)) for x in labels]
    precision = {x: _ratio(tp.get(x, 0), tp.get(x, 0) + fp.get(x, 0)) for x in labels}
    recall = {x: _ratio(tp.get(x, 0), tp.get(x, 0) + fn.get(x, 0)) for x in labels}
    macro = sum(per_label) / len(per_label) if per_label else 0.0
    return Figures(count, micro, macro, precision, recall)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


class Bounded(OrderedDict[str, "dict[int, LabelSet] | LabelSet"]):
    """An insertion-ordered map that forgets its oldest entries past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def keep(self, key: str, value: dict[int, LabelSet] | LabelSet) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
            self.evicted += 1


class Join:
    """Pairs each labelled article with every version's prediction of it."""

    def __init__(self, *, window: int, max_pending: int) -> None:
        self._window = window
        self._predictions = Bounded(max_pending)
        self._labels = Bounded(max_pending)
        self.windows: dict[int, deque[tuple[LabelSet, LabelSet]]] = {}
        self.joined: dict[int, int] = {}
        """Pairs joined per version since the start (not only those in the window)."""
        self._sets: dict[LabelSet, LabelSet] = {}
        """One object per distinct label set (up to ``MAX_INTERNED``), shared by every entry."""

    def _interned(self, labels: Iterable[str]) -> LabelSet:
        found = frozenset(labels)
        if len(self._sets) >= MAX_INTERNED:
            return self._sets.get(found, found)
        return self._sets.setdefault(found, found)

    @property
    def pending(self) -> tuple[int, int]:
        """Predictions waiting for labels, labels waiting for predictions."""
        return len(self._predictions), len(self._labels)

    @property
    def evicted(self) -> int:
        return self._predictions.evicted + self._labels.evicted

    def prediction(self, article_id: str, version: int, labels: Iterable[str]) -> None:
        predicted = self._interned(labels)
        truth = self._labels.get(article_id)
        if isinstance(truth, frozenset):
            self._add(version, truth, predicted)
            return
        waiting = self._predictions.get(article_id)
        by_version = dict(waiting) if isinstance(waiting, dict) else {}
        by_version[version] = predicted
        self._predictions.keep(article_id, by_version)

    def labelled(self, article_id: str, labels: Iterable[str]) -> None:
        truth = self._interned(labels)
        waiting = self._predictions.pop(article_id, None)
        if isinstance(waiting, dict):
            for version, predicted in waiting.items():
                self._add(version, truth, predicted)
        # Kept either way: a version that predicts this article later is scored on it too.
        self._labels.keep(article_id, truth)

    def _add(self, version: int, truth: LabelSet, predicted: LabelSet) -> None:
        window = self.windows.setdefault(version, deque(maxlen=self._window))
        window.append((truth, predicted))
        self.joined[version] = self.joined.get(version, 0) + 1

    def figures(self, version: int) -> Figures:
        return figures(self.windows.get(version, ()))


class Agreement:
    """How often two versions give one article the same label set, and the labels that flip."""

    def __init__(self, *, max_pending: int, window: int) -> None:
        self._seen = Bounded(max_pending)
        self._window = window
        self.pairs: dict[tuple[int, int], deque[tuple[bool, LabelSet]]] = {}

    def prediction(
        self, article_id: str, version: int, labels: Iterable[str]
    ) -> list[tuple[int, LabelSet]]:
        """Record one version's labels; returns, per other version that already scored this
        article, that version and the labels the two disagree on."""
        predicted = frozenset(labels)
        waiting = self._seen.get(article_id)
        by_version = dict(waiting) if isinstance(waiting, dict) else {}
        compared = []
        for other, other_labels in by_version.items():
            if other == version:
                continue
            key = (min(version, other), max(version, other))
            flips = predicted ^ other_labels
            window = self.pairs.setdefault(key, deque(maxlen=self._window))
            window.append((not flips, flips))
            compared.append((other, flips))
        by_version[version] = predicted
        self._seen.keep(article_id, by_version)
        return compared

    def share(self, a: int, b: int) -> tuple[float, int]:
        """The share of shared articles both versions labelled alike, and how many there were."""
        window = self.pairs.get((min(a, b), max(a, b)), deque())
        if not window:
            return 0.0, 0
        return sum(1 for same, _ in window if same) / len(window), len(window)
