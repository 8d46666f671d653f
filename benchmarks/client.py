"""Two single-process consumers without the worker: the client's ceiling and the naive loop.

- ceiling: kafka-python reading the topic with ``decode_article`` (decode + validate) per
  message and nothing else: no model, no producing, no commits; the most any one-process
  Python worker could take in.
- naive: how the usual tutorial code does it: one message, one forward pass, one produce
  (waiting for the broker's acknowledgement), one synchronous commit, with the same model.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from benchmarks.stats import rate
from common.settings import KafkaSettings
from messaging import client_config
from model.inference import Classifier
from schemas import LabelScore, Prediction, SourceRef, decode_article


def ceiling_rate(settings: KafkaSettings, topic: str, count: int) -> float:
    """Messages/s from the first record received to the ``count``-th, decoded and validated."""
    consumer = KafkaConsumer(
        **client_config(settings), group_id=None, enable_auto_commit=False, max_poll_records=500
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        seen, started = 0, 0.0
        while seen < count:
            for records in consumer.poll(timeout_ms=500).values():
                started = started or time.perf_counter()
                for record in records:
                    decode_article(record.value)
                seen += len(records)
        return rate(seen, time.perf_counter() - started)
    finally:
        consumer.close()


def naive_rate(
    settings: KafkaSettings, topic: str, output: str, model: Classifier, count: int
) -> float:
    """Messages/s of the one-at-a-time loop, timed from its first message to its last."""
    consumer = KafkaConsumer(
        topic,
        **client_config(settings),
        group_id=f"bench-naive-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = KafkaProducer(**client_config(settings), acks="all", linger_ms=0)
    try:
        done, started = 0, 0.0
        while done < count:
            for records in consumer.poll(timeout_ms=500, max_records=1).values():
                for record in records:
                    handle(record, model, producer, output)
                    consumer.commit()
                    started = started or time.perf_counter()
                    done += 1
        return rate(done - 1, time.perf_counter() - started)
    finally:
        producer.close()
        consumer.close()


def handle(record: ConsumerRecord, model: Classifier, producer: KafkaProducer, output: str) -> None:
    """Decode, one forward pass, one prediction sent and acknowledged."""
    received = datetime.now(UTC)
    article = decode_article(record.value)
    scores = model.scores(model.encode([article.text]))[0]
    prediction = Prediction(
        article_id=article.id,
        labels=[LabelScore(name=n, score=s) for n, s in model.decide(scores)],
        model_version=model.version,
        worker_id="naive",
        received_at=received,
        classified_at=datetime.now(UTC),
        source=SourceRef(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        ),
    )
    producer.send(output, key=article.id.encode(), value=prediction.model_dump_json().encode()).get(
        timeout=30
    )
