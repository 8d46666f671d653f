"""Counting what the workers publish: predictions and dead letters, per worker and version.

A :class:`Tally` owns one read_committed consumer on a thread of its own. It starts at the
end of the output topics, so a run counts only what it caused, and measures the consumer
group's lag on the input topic every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from pydantic import ValidationError
from sklearn.preprocessing import MultiLabelBinarizer

from common.metrics import micro_f1
from common.settings import KafkaSettings
from messaging import MessagingError
from messaging.admin import Admin
from messaging.consumer import Reader
from schemas import Prediction


@dataclass
class Snapshot:
    """What the tally has seen so far."""

    predicted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    lag: int | None = None
    per_worker: Counter[str] = field(default_factory=Counter)
    worker_version: dict[str, int] = field(default_factory=dict)
    per_version: Counter[int] = field(default_factory=Counter)
    rate: float = 0.0


class Tally:
    """Consume predictions and dead letters in the background; ``snapshot()`` reads it."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        predictions_topic: str,
        dlq_topic: str,
        input_topic: str,
        group_id: str,
    ) -> None:
        self._settings = settings
        self._topics = (predictions_topic, dlq_topic)
        self._input_topic = input_topic
        self._group_id = group_id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = Snapshot()
        self._recent: deque[tuple[float, int]] = deque(maxlen=50)
        self.predictions: dict[str, Prediction] = {}
        self._reader = Reader(settings, self._topics, start="end")
        self._thread = threading.Thread(target=self._run, name="tally", daemon=True)

    def start(self) -> Tally:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._reader.close()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                **{
                    **self._state.__dict__,
                    "per_worker": Counter(self._state.per_worker),
                    "worker_version": dict(self._state.worker_version),
                    "per_version": Counter(self._state.per_version),
                }
            )

    def _run(self) -> None:
        admin = Admin(self._settings)
        next_lag = 0.0
        try:
            while not self._stop.is_set():
                for record in self._reader.poll(timeout_ms=200):
                    self._count(record.topic, record.value or b"")
                if time.monotonic() >= next_lag:
                    self._measure_lag(admin)
                    next_lag = time.monotonic() + 2.0
        finally:
            admin.close()

    def _count(self, topic: str, value: bytes) -> None:
        with self._lock:
            if topic == self._topics[1]:
                self._state.dead_letters += 1
                return
            try:
                prediction = Prediction.model_validate_json(value)
            except ValidationError:
                return
            if prediction.article_id in self.predictions:
                self._state.duplicates += 1
            self.predictions[prediction.article_id] = prediction
            self._state.predicted += 1
            self._state.per_worker[prediction.worker_id] += 1
            self._state.worker_version[prediction.worker_id] = prediction.model_version
            self._state.per_version[prediction.model_version] += 1
            now = time.monotonic()
            self._recent.append((now, self._state.predicted))
            first_time, first_count = self._recent[0]
            if now - first_time > 0.5:
                self._state.rate = (self._state.predicted - first_count) / (now - first_time)

    def _measure_lag(self, admin: Admin) -> None:
        try:
            rows = admin.group_lag(self._group_id, self._input_topic)
        except MessagingError:  # lag is informative only; a failed read leaves it unknown
            return
        lag = sum(row.lag for row in rows)
        with self._lock:
            self._state.lag = lag


def micro_f1_by_version(
    predictions: dict[str, Prediction], gold: dict[str, list[str]], labels: list[str]
) -> dict[int, tuple[int, float]]:
    """Per model version: how many gold articles it predicted, and their micro-F1."""
    by_version: dict[int, list[tuple[list[str], list[str]]]] = defaultdict(list)
    for article_id, prediction in predictions.items():
        if article_id in gold:
            predicted = [label.name for label in prediction.labels]
            by_version[prediction.model_version].append((gold[article_id], predicted))
    binarizer = MultiLabelBinarizer(classes=labels)
    binarizer.fit([labels])
    result = {}
    for version, pairs in sorted(by_version.items()):
        truth = binarizer.transform([[x for x in t if x in labels] for t, _ in pairs])
        guess = binarizer.transform([[x for x in p if x in labels] for _, p in pairs])
        result[version] = (
            len(pairs),
            micro_f1(truth, guess.astype(bool)),
        )
    return result
