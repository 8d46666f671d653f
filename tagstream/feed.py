"""Feeding articles into Kafka: from a corpus split or a JSONL file, at a steady rate."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal

from kafka import KafkaProducer

import corpus
from common.settings import KafkaSettings
from schemas import Article, LabelledArticle

Split = Literal["train", "validation", "test"]


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
    producer = KafkaProducer(**settings.client_config(), acks="all", linger_ms=5)
    sent = 0
    started = time.monotonic()
    try:
        for article in articles:
            if rate:
                _pace(started, sent, rate)
            producer.send(topic, key=article.id.encode(), value=article.model_dump_json().encode())
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def _pace(started: float, sent: int, rate: float) -> None:
    """Sleep until the ``sent``-th message is due on a steady schedule."""
    due = started + sent / rate
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
