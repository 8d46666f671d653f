"""One worker end to end (articles/s, Kafka in to Kafka out) next to the model alone.

    .venv/bin/python benchmarks/worker_throughput.py [--articles 6000] [--runs 3]
        [--profile full] [--batch-size 64] [--threads 1]

The model has the network of a trainer profile (``trainer.profiles``; ``full`` by default)
with an encoder learnt from the Reuters-21578 training split and untrained weights:
throughput depends on the shapes, not on what the weights learnt.
Articles are the Reuters test split (real lengths), repeated with fresh ids to ``--articles``.

Model only: the same batches the worker would form (``--batch-size`` articles in arrival
order, scored with the worker's own length buckets), timed for scoring alone and for
encoding plus scoring. End to end: the input topic (4 partitions) is filled first, then one
in-process worker starts; the clock runs from its first consumed message to the broker's
acknowledgement of the last prediction. Kafka and Redis are the project's local stack,
unless ``TAGSTREAM_KAFKA_BOOTSTRAP`` is set. Every run reports its median and spread.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from kafka import KafkaProducer

import corpus
from common.logging import configure
from common.settings import KafkaSettings, RedisSettings
from messaging import client_config, ensure_topics
from model.artifact import Artifact
from model.config import NetworkConfig
from model.encoder import TextEncoder
from model.inference import Classifier
from model.network import build_network
from model.settings import RegistrySettings
from schemas import Article, ModelManifest, TrainingDataSummary
from tagstream.stack import LocalStack, StackSettings
from trainer.profiles import profile
from worker.app import Worker, total
from worker.inference import Scorer
from worker.settings import WorkerSettings


def build_artifact(profile_name: str, train_texts: list[str], labels: list[str]) -> Artifact:
    settings = profile(profile_name)
    encoder = TextEncoder.train(
        train_texts,
        vocab_size=settings.vocab_size,
        min_frequency=settings.min_frequency,
        max_tokens=settings.max_tokens,
    )
    config = NetworkConfig.for_data(settings, vocab_size=encoder.vocab_size, n_labels=len(labels))
    network = build_network(config, seed=1)
    manifest = ModelManifest(
        created_at="2025-01-01T00:00:00Z",
        labels=labels,
        thresholds=[0.5] * len(labels),
        encoder_digest=encoder.digest,
        hyperparameters={"profile": profile_name},
        training_data=TrainingDataSummary(
            train_documents=0, validation_documents=0, source="benchmark (untrained weights)"
        ),
    )
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    return Artifact(manifest=manifest, encoder=encoder, config=config, state=state)


def payloads(test: list[Article], count: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        source = test[i % len(test)]
        article = Article(id=f"bench-{i}", title=source.title, body=source.body)
        out.append((article.id.encode(), article.model_dump_json().encode()))
    return out


def produce(kafka: KafkaSettings, topic: str, data: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(**client_config(kafka), acks="all", linger_ms=20)
    for key, value in data:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=60)
    producer.close()


def model_only(
    model: Classifier, texts: list[str], batch_size: int, bucket_size: int
) -> dict[str, float]:
    """Articles per wall second and per CPU second, scoring alone and encoding + scoring."""
    scorer = Scorer(bucket_size)
    wall, cpu = time.perf_counter(), time.process_time()
    encoded = [model.encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    encode_wall, encode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    real = padded = 0
    for batch in encoded:
        scored = scorer.score(model, batch)
        real, padded = real + scored.real_tokens, padded + scored.padded_tokens
    score_wall, score_cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(texts)
    return {
        "model only: scoring, articles/s": n / score_wall,
        "model only: encoding + scoring, articles/s": n / (encode_wall + score_wall),
        "model only: scoring, articles per CPU-second": n / score_cpu,
        "model only: encoding + scoring, articles per CPU-second": n / (encode_cpu + score_cpu),
        "padding ratio fed to the model": 1 - real / padded,
    }


def end_to_end(
    kafka: KafkaSettings,
    data: list[tuple[bytes, bytes]],
    model_path: Path,
    guarantee: str,
    batch_size: int,
    threads: int,
    cache: Path,
) -> tuple[float, float]:
    """Articles per wall second and per CPU second of this process, first poll to last ack."""
    run = uuid.uuid4().hex[:8]
    topics = {"input": f"bench-in-{run}", "output": f"bench-out-{run}", "dlq": f"bench-dlq-{run}"}
    ensure_topics(kafka, {topics["input"]: 4, topics["output"]: 4, topics["dlq"]: 1})
    produce(kafka, topics["input"], data)
    settings = WorkerSettings(
        input_topic=topics["input"],
        output_topic=topics["output"],
        dlq_topic=topics["dlq"],
        group_id=f"bench-{run}",
        worker_id=f"bench-{run}",
        model_path=model_path,
        processing_guarantee=guarantee,
        max_batch_size=batch_size,
        threads=threads,
        metrics_port=None,
        log_level="WARNING",
    )
    worker = Worker(settings, kafka, RedisSettings(), RegistrySettings(cache_dir=cache))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    m = worker.metrics
    first = wait_for(lambda: total(m.consumed) > 0, timeout_s=120)
    cpu = time.process_time()
    last = wait_for(lambda: total(m.predictions) + total(m.dead_letters) >= len(data))
    cpu = time.process_time() - cpu
    worker.stop()
    thread.join(timeout=60)
    if thread.is_alive():
        faulthandler.dump_traceback(all_threads=True)
        raise RuntimeError("the worker did not stop")
    return len(data) / (last - first), len(data) / cpu


def wait_for(condition: Callable[[], bool], timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(all_threads=True)
            raise TimeoutError("the worker did not finish in time")
        pause.wait(0.002)
    return time.perf_counter()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", default="full")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure("INFO", json=True)  # the worker's log lines go to stderr
    torch.set_num_threads(args.threads)
    reuters = corpus.load()
    artifact = build_artifact(args.profile, [a.text for a in reuters.train], reuters.labels)
    model = Classifier.from_artifact(artifact, version=1, device="cpu", threads=args.threads)
    model.warm_up()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, kafka_for(Path(tmp)) as kafka:
        model_path = Path(tmp) / "model.safetensors"
        model_path.write_bytes(artifact.to_bytes())
        data = payloads(reuters.test, args.articles)
        texts = [Article.model_validate_json(value).text for _, value in data]
        bucket = WorkerSettings(metrics_port=None).bucket_size
        rows: dict[str, list[float]] = {}
        for _ in range(args.runs):  # interleaved, so drift in the machine's load hits all alike
            alone = model_only(model, texts, args.batch_size, bucket)
            for name, value in alone.items():
                rows.setdefault(name, []).append(value)
            for guarantee in ("at_least_once", "exactly_once"):
                wall, cpu = end_to_end(
                    kafka,
                    data,
                    model_path,
                    guarantee,
                    args.batch_size,
                    args.threads,
                    Path(tmp) / "cache",
                )
                name = guarantee.replace("_", "-")
                for key, value in (
                    (f"end to end, {name}, articles/s", wall),
                    (f"end to end, {name}, articles per CPU-second", cpu),
                    (
                        f"ratio: end to end {name} / model scoring, wall",
                        wall / alone["model only: scoring, articles/s"],
                    ),
                    (
                        f"ratio: end to end {name} / model scoring, CPU",
                        cpu / alone["model only: scoring, articles per CPU-second"],
                    ),
                ):
                    rows.setdefault(key, []).append(value)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; profile {args.profile}, "
        f"batch {args.batch_size}, {args.articles} articles, {args.runs} interleaved runs"
    )
    print("| measurement | median | min-max |\n|---|---|---|")
    for name, values in rows.items():
        digits = 2 if "ratio" in name else 0
        print(
            f"| {name} | {statistics.median(values):,.{digits}f} | "
            f"{min(values):,.{digits}f}-{max(values):,.{digits}f} |"
        )


@contextmanager
def kafka_for(tmp: Path) -> Iterator[KafkaSettings]:
    """The Kafka of ``TAGSTREAM_KAFKA_BOOTSTRAP``, else a local stack started for the run."""
    bootstrap = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield KafkaSettings(bootstrap=bootstrap)
        return
    stack = LocalStack(StackSettings(dir=tmp / "stack"))
    try:
        yield KafkaSettings(bootstrap=stack.up()[0].kafka_bootstrap)
    finally:
        stack.down()


if __name__ == "__main__":
    main()
