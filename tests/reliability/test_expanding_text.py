"""Scenario 9: bodies that NFKC expands, among ordinary articles, in bounded memory.

U+FDFA is 3 UTF-8 bytes and normalises to 18 characters and 4 words, so a body of it at the
size limit (256 KiB) is legal and would become about 262,000 tokens if it were normalised
whole. The worker cuts each text to what ``max_tokens`` can use before normalising. The
test warms a worker up on ordinary articles, then sends a stream mixing ordinary articles
with such bodies over several partitions (so polled chunks hold many of them at once): every
article is answered, and the worker's peak resident memory (``VmHWM``) stays within 200 MiB
of its resident memory after the warm-up.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from schemas import Article
from tests.reliability.support import Scale, record
from tests.worker.harness import articles, env_for
from tests.worker.kafka_tools import TopicReader, WorkerProcess, produce, wait_until

pytestmark = pytest.mark.integration

EXPANDING = "\ufdfa"
BODY = EXPANDING * (256 * 1024 // 3)
"""262,143 UTF-8 bytes: just under the default body limit of 256 KiB."""
WIDE = 64
WARM_UP = 600
HEADROOM_MIB = 200


def memory_mib(pid: int) -> dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def wide_articles(count: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"wide-{i}".encode(), Article(id=f"wide-{i}", body=BODY).model_dump_json().encode())
        for i in range(count)
    ]


def mixed_stream(start: int) -> list[tuple[bytes, bytes]]:
    """Ordinary articles with an expanding body after every fourth one."""
    ordinary = articles(4 * WIDE, start=start)
    stream = []
    for i, wide in enumerate(wide_articles(WIDE)):
        stream += [*ordinary[4 * i : 4 * i + 4], wide]
    return stream


def test_bodies_that_normalisation_expands_are_answered_in_bounded_memory(
    scale: Scale,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(4)
    predictions, letters = reader(t["output"]), reader(t["dlq"])

    produce(kafka_settings, t["input"], articles(WARM_UP))
    worker = processes(env_for(service_env, t, group_id, model_path=str(toy_model)), "worker")
    wait_until(lambda: len(predictions.ids()) >= WARM_UP, scale.patience_s, "the warm-up")
    warm = memory_mib(worker.process.pid)

    stream = mixed_stream(start=WARM_UP)
    produce(kafka_settings, t["input"], stream)
    expected = {key.decode() for key, _ in stream} | {f"art-{i}" for i in range(WARM_UP)}
    total = WARM_UP + len(stream)
    wait_until(
        lambda: len(predictions.snapshot()) + len(letters.snapshot()) >= total,
        scale.patience_s * 3,
        f"{total} answers",
    )
    peak = memory_mib(worker.process.pid)
    assert worker.process.poll() is None, "the worker is still running"
    worker.signal(15)
    assert worker.wait() == 0

    predicted = set(predictions.ids())
    dead = letters.snapshot()
    missing = expected - predicted - {base64.b64decode(d["key"]).decode() for d in dead}
    record(
        "9-expanding-text",
        produced=total,
        expanding_bodies=WIDE,
        predicted=len(predicted & expected),
        dead_lettered=len(dead),
        missing=len(missing),
        rss_mib_after_warm_up=round(warm["VmRSS"]),
        peak_rss_mib=round(peak["VmHWM"]),
    )
    assert not missing, f"{len(missing)} articles neither predicted nor dead-lettered"
    assert {f"wide-{i}" for i in range(WIDE)} <= predicted, "expanding bodies are legal articles"
    growth = peak["VmHWM"] - warm["VmRSS"]
    assert growth < HEADROOM_MIB, (
        f"peak RSS {peak['VmHWM']:.0f} MiB, {growth:.0f} MiB above {warm['VmRSS']:.0f} MiB"
        " after the warm-up"
    )
