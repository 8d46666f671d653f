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
# Each generated message comes with what it must become, known by construction: the generator
# either built a valid Article or injected one named defect. The worker's own decoder is not
# consulted, so a bug in it cannot agree with itself here.
@dataclass(frozen=True)
class Generated:
    value: bytes | None
    expect: Outcome
    defect: str
    article_id: str | None = None


ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:", min_size=1, max_size=60)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
prose = st.lists(words, min_size=1, max_size=40).map(" ".join)
free_text = st.text(max_size=200)
"""Any Unicode (Hypothesis leaves surrogates out), control characters and all."""
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
"""JSON scalars (json.dumps would write NaN and Infinity, which are not JSON)."""
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
not_strings = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
not_strings |= st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars)


@st.composite
def valid_articles(draw: st.DrawFn) -> dict[str, Any]:
    article: dict[str, Any] = {"id": draw(ids), "body": draw(prose)}
    if draw(st.booleans()):
        article["title"] = draw(free_text)
    if draw(st.booleans()):
        article["language"] = draw(st.sampled_from(["en", "de", "pt-BR"]))
    if draw(st.booleans()):
        article["metadata"] = draw(st.dictionaries(words, words | st.integers(), max_size=3))
    return article


def _dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


def _valid(article: dict[str, Any], ascii_only: bool) -> Generated:
    return Generated(_dumps(article, ascii_only), "predicted", "none", article["id"])


def _with(defect: str, expect: Outcome, change: Callable[[dict[str, Any]], Any]) -> Any:
    """A valid article spoiled by ``change`` (which returns the new JSON value)."""
    return st.tuples(valid_articles(), st.booleans()).map(
        lambda pair: Generated(_dumps(change(dict(pair[0])), pair[1]), expect, defect)
    )


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda article: article | {key: value}


def _without_id(article: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in article.items() if k != "id"}


generated = st.one_of(
    st.tuples(valid_articles(), st.booleans()).map(lambda pair: _valid(*pair)),
    st.just(Generated(None, "decode", "no value")),
    st.binary(max_size=300).map(lambda b: Generated(b"\xff" + b, "decode", "not UTF-8")),
    free_text.map(lambda t: Generated(("<" + t).encode(), "decode", "not JSON")),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: Generated(_dumps(v, True), "validation", "JSON but not an object")
    ),
    _with("no id", "validation", _without_id),
    not_strings.flatmap(lambda v: _with("id not a string", "validation", _set("id", v))),
    st.sampled_from(["", " ", "\t\n"]).flatmap(
        lambda v: _with("empty id", "validation", _set("id", v))
    ),
    ids.flatmap(lambda v: _with("control character in id", "validation", _set("id", v + "\x01"))),
    not_strings.flatmap(lambda v: _with("body not a string", "validation", _set("body", v))),
    st.sampled_from(["", "  ", "\n\t "]).flatmap(
        lambda v: _with("nothing to classify", "validation", lambda a: a | {"body": v, "title": v})
    ),
    st.integers()
    .filter(lambda n: n != 1)
    .flatmap(lambda v: _with("unknown schema version", "validation", _set("schema_version", v))),
    words.filter(lambda k: k not in Article.model_fields).flatmap(
        lambda k: _with("unknown field", "validation", _set(k, 1))
    ),
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
    @given(st.lists(generated, min_size=10, max_size=40))
    def round_of(cases: list[Generated]) -> None:
        good = articles(len(cases), start=200_000 + position[0])
        expected = [
            pair
            for i, case in enumerate(cases)
            for pair in (
                Generated(good[i][1], "predicted", "none", good[i][0].decode()),
                case,
            )
        ]
        produce(kafka, topic, [(b"gen", case.value) for case in expected], partition=0)
        first = position[0]
        position[0] += len(expected)
        answers.wait(position[0], scale)
        found = answers.by_offset()
        for index, case in enumerate(expected):
            got = found.get(first + index, [])
            assert len(got) == 1, f"{case.defect}: {case.value!r:.200}: {len(got)} answers"
            _check_generated(case, got[0])

    round_of()
    return position[0]


def _check_generated(case: Generated, answer: dict[str, Any]) -> None:
    """The worker did what the generator made the message for: predicted a valid article
    under its id, dead-lettered a defect with the kind of that defect and a reason."""
    where = f"{case.defect}: {case.value!r:.200}: {answer}"
    if case.expect == "predicted":
        assert answer.get("article_id") == case.article_id, where
    else:
        assert answer.get("error_kind") == case.expect, where
        assert answer["error_message"], "a dead letter says why"
