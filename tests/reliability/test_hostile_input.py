"""Scenario 4: hostile input, hand-made and generated, among good articles in the same batches.

Every message gets exactly one answer: a prediction, or a dead letter whose kind and reason
say why. The worker keeps running, and its rate on good articles afterwards is compared with
its rate before (reported; asserted only against a generous floor).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.settings import KafkaSettings
from schemas import Article
from tests.reliability.support import (
    Scale,
    metrics_port,
    record,
    sample_value,
    scrape,
    timestamp,
)
from tests.worker.harness import articles, env_for
from tests.worker.kafka_tools import TopicReader, WorkerProcess, produce, wait_until
from worker.decoding import decode

pytestmark = pytest.mark.integration

MAX_BODY = 1_020_000
"""The worker's body limit here: a 1 MB word gets through to the encoder, a 1.03 MB body is
refused for its size, and both stay under Kafka's 1 MiB message limit."""
MAX_MESSAGE = 1024 * 1024
"""The worker's limit on a raw message value (its default), checked before parsing."""

Outcome = Literal["decode", "validation", "predicted"]


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None
    expect: Outcome
    key: bytes | None = b"hostile"
    reason: str = ""
    """A fragment the dead letter's reason must contain."""


def _body(body: bytes, article_id: bytes = b"h") -> bytes:
    return b'{"id": "' + article_id + b'", "body": "' + body + b'"}'


CASES = [
    Case("not JSON", b"this is not json", "decode", reason="Invalid JSON"),
    Case("invalid UTF-8", _body(b"caf\xc3 \xff\xfe"), "decode", reason="unicode"),
    Case("id missing", b'{"title": "no id", "body": "text"}', "validation", reason="id: Field"),
    Case("body a number", b'{"id": "t", "body": 42}', "validation", reason="body:"),
    Case("id a list", b'{"id": ["x"], "body": "text"}', "validation", reason="id:"),
    Case("null id", b'{"id": null, "body": "text"}', "validation", reason="id:"),
    Case("empty id", b'{"id": "", "body": "text"}', "validation", reason="id:"),
    Case("empty body", b'{"id": "e", "title": "", "body": ""}', "validation", reason="empty"),
    Case("blank body", b'{"id": "b", "body": "  \\n\\t "}', "validation", reason="empty"),
    Case("body over the limit", _body(b"x " * 515_000), "validation", reason="over the limit"),
    Case("one 1 MB word", _body(b"w" * 1_000_000, b"word"), "predicted"),
    Case(
        "nested 10,000 deep",
        b'{"id": "n", "body": "x", "metadata": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        "decode",
        reason="recursion limit",
    ),
    Case(
        "huge number",
        b'{"id": "n", "body": "x", "metadata": {"n": 1' + b"0" * 5000 + b"}}",
        "decode",
        reason="number out of range",
    ),
    Case(
        "big number in metadata",
        b'{"id": "big", "body": "x y", "metadata": {"n": 1' + b"0" * 400 + b"}}",
        "predicted",
    ),
    Case("number as id", b'{"id": 123456789012345678901234567890, "body": "x"}', "validation"),
    Case("duplicate key", b'{"id": "first", "id": "dupkey", "body": "x y"}', "predicted"),
    Case("duplicate id, once", _body(b"same id twice", b"dup"), "predicted"),
    Case("duplicate id, twice", _body(b"same id twice", b"dup"), "predicted"),
    Case("escaped control characters", _body(b"a\\u0000b\\u0007c\\u001f", b"ctl"), "predicted"),
    Case("raw control character", _body(b"a\x01b"), "decode", reason="control character"),
    Case("lone surrogate", _body(b"\\ud800"), "decode"),
    Case("wrong schema version", b'{"schema_version": 2, "id": "v", "body": "x"}', "validation"),
    Case("JSON array", b"[1, 2]", "validation", reason="object"),
    Case("JSON null", b"null", "validation", reason="object"),
    Case(
        "unknown field",
        b'{"id": "u", "body": "x", "extra": 1}',
        "validation",
        reason="unexpected field",
    ),
    Case("null key", _body(b"keyless article", b"nokey"), "predicted", key=None),
    Case("empty message", b"", "decode", reason="EOF"),
    Case("no value (tombstone)", None, "decode", reason="no value"),
]


def test_hostile_messages_are_dead_lettered_with_reasons_and_neighbours_predicted(
    scale: Scale,
    kafka_settings: KafkaSettings,
    service_env: dict[str, str],
    topics: Callable[[int], dict[str, str]],
    group_id: str,
    toy_model: Path,
    reader: Callable[..., TopicReader],
    processes: Callable[..., WorkerProcess],
) -> None:
    t = topics(1)
    env = env_for(
        service_env,
        t,
        group_id,
        model_path=str(toy_model),
        max_body_bytes=str(MAX_BODY),
        max_message_bytes=str(MAX_MESSAGE),
    )
    predictions, letters = reader(t["output"]), reader(t["dlq"])
    answers = Answers(predictions, letters)
    good = 2000
    produce(kafka_settings, t["input"], articles(good))
    worker = processes(env, "worker")
    answers.wait(good, scale)
    before = answers.rate(range(0, good))

    mixed = _interleave(CASES, start=good)
    produce(kafka_settings, t["input"], [(v.key, v.value) for v in mixed], partition=0)
    answers.wait(good + len(mixed), scale)
    _check_cases(answers, mixed, first_offset=good)

    offset = good + len(mixed)
    offset = _generated_rounds(kafka_settings, t["input"], answers, offset, scale)

    produce(kafka_settings, t["input"], articles(good, start=10 * good))
    answers.wait(offset + good, scale)
    after = answers.rate(range(offset, offset + good))

    assert worker.process.poll() is None, "the worker is still running"
    metrics = scrape(metrics_port(worker))
    dead = len(letters.snapshot())
    assert sample_value(metrics, "tagstream_worker_messages_consumed_total") == offset + good
    worker.signal(15)
    assert worker.wait() == 0
    record(
        "4-hostile-input",
        hand_made_cases=len(CASES),
        generated_rounds=scale.hostile_examples,
        produced=offset + good,
        predicted=len(predictions.snapshot()),
        dead_lettered=dead,
        missing=0,
        duplicated=0,
        rate_before=round(before),
        rate_after=round(after),
    )
    assert after > 0.3 * before, f"throughput after {after:.0f}/s vs before {before:.0f}/s"


@dataclass(frozen=True)
class Sent:
    """One message of the mixed batch and what it should become."""

    key: bytes | None
    value: bytes | None
    expect: Outcome
    case: Case | None


def _interleave(cases: list[Case], start: int) -> list[Sent]:
    """A good article before and after every hostile message."""
    good = iter(articles(len(cases) + 1, start=start + 100_000))
    sent: list[Sent] = []
    for case in cases:
        key, value = next(good)
        sent += [Sent(key, value, "predicted", None), Sent(case.key, case.value, case.expect, case)]
    key, value = next(good)
    return [*sent, Sent(key, value, "predicted", None)]


class Answers:
    """Predictions and dead letters of one single-partition input, by source offset."""

    def __init__(self, predictions: TopicReader, letters: TopicReader) -> None:
        self.predictions = predictions
        self.letters = letters

    def by_offset(self) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, list[dict[str, Any]]] = {}
        for answer in self.predictions.snapshot() + self.letters.snapshot():
            found.setdefault(answer["source"]["offset"], []).append(answer)
        return found

    def wait(self, count: int, scale: Scale) -> None:
        wait_until(
            lambda: len(self.predictions.snapshot()) + len(self.letters.snapshot()) >= count,
            scale.patience_s,
            f"{count} answers",
        )

    def rate(self, offsets: range) -> float:
        """Predictions per second over ``offsets``, from their ``classified_at`` times."""
        wanted = set(offsets)
        times = sorted(
            timestamp(p["classified_at"])
            for p in self.predictions.snapshot()
            if p["source"]["offset"] in wanted
        )
        return (len(times) - 1) / max(1e-6, times[-1] - times[0])


def _check_cases(answers: Answers, mixed: list[Sent], first_offset: int) -> None:
    found = answers.by_offset()
    for index, sent in enumerate(mixed):
        offset = first_offset + index
        name = sent.case.name if sent.case else f"good neighbour at {offset}"
        got = found.get(offset, [])
        assert len(got) == 1, f"{name}: {len(got)} answers"
        answer = got[0]
        if sent.expect == "predicted":
            assert "article_id" in answer, f"{name}: dead-lettered: {answer.get('error_message')}"
            continue
        assert answer.get("error_kind") == sent.expect, f"{name}: {answer}"
        assert sent.case is not None
        assert sent.case.reason.lower() in answer["error_message"].lower(), (
            f"{name}: reason {answer['error_message']!r}"
        )
        assert answer["key"] == _b64(sent.key)


def _b64(key: bytes | None) -> str | None:
    return None if key is None else base64.b64encode(key).decode()


# -- generated payloads -----------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
article_like = st.fixed_dictionaries(
    {"id": st.text(max_size=300) | json_values},
    optional={
        "title": st.text(max_size=200) | json_values,
        "body": st.text(max_size=2000) | json_values,
        "metadata": json_values,
        "schema_version": st.integers(0, 2),
        "language": st.text(max_size=20),
    },
)
payloads = st.one_of(
    st.none(),
    st.binary(max_size=500),
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    article_like.map(lambda v: json.dumps(v).encode()),
    article_like.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)


def _generated_rounds(
    kafka: KafkaSettings, topic: str, answers: Answers, offset: int, scale: Scale
) -> int:
    """Rounds of generated payloads between good articles; returns the next offset."""
    position = [offset]

    @settings(
        max_examples=scale.hostile_examples,
        deadline=None,
        database=None,
        derandomize=scale.name == "ci",
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(payloads, min_size=10, max_size=40))
    def round_of(values: list[bytes | None]) -> None:
        good = articles(len(values), start=200_000 + position[0])
        batch = [pair for i, v in enumerate(values) for pair in (good[i], (b"gen", v))]
        produce(kafka, topic, batch, partition=0)
        first = position[0]
        position[0] += len(batch)
        answers.wait(position[0], scale)
        found = answers.by_offset()
        for index, (_, value) in enumerate(batch):
            got = found.get(first + index, [])
            assert len(got) == 1, f"payload {value!r:.200}: {len(got)} answers"
            _check_generated(value, got[0])

    round_of()
    return position[0]


def _check_generated(value: bytes | None, answer: dict[str, Any]) -> None:
    """The worker did what the decoder says it should: predicted an Article, dead-lettered
    anything else with the decoder's kind of reason."""
    decoded = decode(value, MAX_BODY, MAX_MESSAGE)
    if isinstance(decoded, Article):
        assert answer.get("article_id") == decoded.id or answer.get("error_kind") == "encoding", (
            f"payload {value!r:.200}: {answer}"
        )
    else:
        assert answer.get("error_kind") == decoded.kind, f"payload {value!r:.200}: {answer}"
        assert answer["error_message"], "a dead letter says why"
