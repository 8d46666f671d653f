"""``python -m benchmarks.compression [--articles N] [--rounds R]``: what each codec costs.

One worker (``python -m worker``, at-least-once, the toy model) predicts the same articles
once per codec of ``TAGSTREAM_KAFKA_COMPRESSION_TYPE``, in turns (``rounds`` times each).
Reported per codec, as medians over the rounds: the bytes the output topic holds on the
broker's disk (log segments, record-batch framing included) and the worker's CPU seconds
(user + system from /proc, from assignment until the group has committed every article).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import corpus
from benchmarks.workers import WorkerProcess
from common.settings import KafkaSettings
from messaging import ensure_topics
from messaging.admin import admin
from model.toy import toy_artifact
from schemas import Article
from tagstream.stack import LocalStack, StackSettings
from tests.worker.kafka_tools import produce

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
LABELS = ("earn", "acq", "crude", "trade", "money-fx")


def output_bytes(data_dir: Path, topic: str) -> int:
    return sum(f.stat().st_size for f in data_dir.glob(f"{topic}-*/*.log"))


def one_run(
    kafka: KafkaSettings, data_dir: Path, work: Path, codec: str, values: list[tuple[bytes, bytes]]
) -> tuple[int, float, float]:
    run = f"codec-{codec}-{uuid.uuid4().hex[:6]}"
    topics = {"input": f"{run}.in", "output": f"{run}.out", "dlq": f"{run}.dlq"}
    ensure_topics(kafka, {topics["input"]: 4, topics["output"]: 4, topics["dlq"]: 1})
    produce(kafka, topics["input"], values)
    settings = {
        "input_topic": topics["input"],
        "output_topic": topics["output"],
        "dlq_topic": topics["dlq"],
        "group_id": run,
        "model_path": str(work / "toy.safetensors"),
    }
    worker = WorkerProcess.start(
        run, kafka, settings, work, env={"TAGSTREAM_KAFKA_COMPRESSION_TYPE": codec}
    )
    try:
        worker.wait_ready()
        cpu0, started = worker.cpu_seconds(), time.monotonic()
        with admin(kafka) as client:
            while sum(client.committed(run).values()) < len(values):
                if time.monotonic() - started > 600:
                    raise TimeoutError(f"{run}: not every article committed in 600 s")
                time.sleep(0.2)
        cpu, seconds = worker.cpu_seconds() - cpu0, time.monotonic() - started
    finally:
        worker.stop()
    return output_bytes(data_dir, topics["output"]), cpu, seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    test = corpus.load().test
    values = [
        (
            f"c{i}".encode(),
            Article(id=f"c{i}", title=a.title, body=a.body).model_dump_json().encode(),
        )
        for i, a in enumerate(test[i % len(test)] for i in range(args.articles))
    ]
    results: dict[str, list[tuple[int, float, float]]] = {codec: [] for codec in CODECS}
    with tempfile.TemporaryDirectory(prefix="tagstream-codecs-") as directory:
        work = Path(directory)
        (work / "toy.safetensors").write_bytes(toy_artifact(LABELS).to_bytes())
        stack = LocalStack(StackSettings(dir=work / "stack"))
        state, _ = stack.up()
        kafka = KafkaSettings(bootstrap=state.kafka_bootstrap)
        try:
            for round_ in range(args.rounds):
                for codec in CODECS:
                    results[codec].append(
                        one_run(kafka, work / "stack/kafka/data", work, codec, values)
                    )
                    print(f"round {round_ + 1} {codec}: {results[codec][-1]}", file=sys.stderr)
        finally:
            stack.down()
    print(f"{args.articles} articles, {args.rounds} rounds; medians")
    print("| codec | output bytes | bytes per prediction | worker CPU s | CPU ms per article |")
    print("|---|---:|---:|---:|---:|")
    for codec, runs in results.items():
        size = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(
            f"| {codec} | {size:,.0f} | {size / args.articles:.1f} | {cpu:.2f} "
            f"| {1000 * cpu / args.articles:.3f} |"
        )


if __name__ == "__main__":
    main()
