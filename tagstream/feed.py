"""Feeding articles into Kafka: from a corpus split or a JSONL file, at a steady rate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from kafka import KafkaProducer

import corpus
from common.errors import DataError
from common.settings import KafkaSettings
from schemas import Article, LabelledArticle

Split = Literal["train", "validation", "test"]


def split_articles(split: Split) -> list[LabelledArticle]:
    """One split of Reuters-21578, with gold labels."""
    data = corpus.load()
    articles: list[LabelledArticle] = getattr(data, split)
    return articles


def jsonl_articles(path: Path) -> Iterator[LabelledArticle]:
    """Articles from a JSON-lines file (``labels`` optional); a bad line names its number."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield LabelledArticle.model_validate_json(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not an article: {exc}") from None


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


def encode_jsonl(articles: Iterable[LabelledArticle]) -> str:
    """Articles as JSON lines (the format ``produce --file`` reads)."""
    return "".join(json.dumps(a.model_dump(mode="json")) + "\n" for a in articles)
