"""Feeding articles into Kafka: from a corpus split or a JSONL file, at a steady rate."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal

import corpus
from common.settings import KafkaSettings
from messaging import Producer
from schemas import Article, LabelledArticle

Split = Literal["train", "validation", "test"]
FLUSH_TIMEOUT_S = 60.0


def split_articles(split: Split) -> list[LabelledArticle]:
    """One split of Reuters-21578, with gold labels."""
    data = corpus.load()
    articles: list[LabelledArticle] = getattr(data, split)
    return articles


def unlabelled(article: LabelledArticle) -> Article:
    """The article as a worker receives it: without its gold labels."""
    return Article.model_validate(article.model_dump(exclude={"labels"}))


def produce(
    settings: KafkaSettings,
    topic: str,
    articles: Iterable[Article],
    *,
    rate: float | None = None,
) -> int:
    """Send each article keyed by its id, at most ``rate`` per second; returns the count."""
    producer = Producer(settings, linger_ms=5)
    sent = 0
    started = time.monotonic()
    try:
        for article in articles:
            if rate:
                _pace(started, sent, rate)
            key, value = article.id.encode(), article.model_dump_json().encode()
            producer.send(topic, key, value, None)
            sent += 1
        producer.flush(FLUSH_TIMEOUT_S)
    finally:
        producer.close(FLUSH_TIMEOUT_S)
    return sent


def _pace(started: float, sent: int, rate: float) -> None:
    """Sleep until the ``sent``-th message is due on a steady schedule."""
    due = started + sent / rate
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
