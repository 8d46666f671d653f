"""The whole run, in the order of the report's sections, into one :class:`Results`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from benchmarks import client, end_to_end, memory, model_only
from benchmarks.machine import Machine, describe
from benchmarks.models import BenchModel, articles, serving_model, size_variants
from benchmarks.plan import Plan
from benchmarks.stats import Spread
from benchmarks.streams import Topics, fill, kafka, messages
from model.inference import Classifier

T = TypeVar("T")


@dataclass(frozen=True)
class Results:
    plan: Plan
    command: str
    machine: Machine
    model: str
    model_trained: bool
    model_parameters: int
    articles: int
    mean_tokens: float
    max_tokens: int
    encode: Spread
    model_rows: list[model_only.ModelRow]
    worker_path: Spread
    worker_path_padding: float
    ceiling: Spread
    naive: Spread
    end_to_end: end_to_end.EndToEnd
    memory: list[memory.MemoryRow]
    replaced_workers: int
    """Workers started again after hanging while joining their group (see WorkerGroup)."""
    load_average: tuple[float, float]
    """The 1-minute load average at the start and at the end of the run."""
    seconds: float


class Progress:
    """One line per step on stderr, with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.load_at_start = os.getloadavg()[0]

    def step(self, what: str, action: Callable[[], T]) -> T:
        print(f"[{self.elapsed():5.0f} s] {what}", file=sys.stderr, flush=True)
        return action()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def model_section(
    model: Classifier, token_ids: list[list[int]], plan: Plan
) -> list[model_only.ModelRow]:
    rows = model_only.measure(model, token_ids, plan)
    if model.runtime.name != "torch":
        on_torch = Classifier.from_artifact(
            model.artifact, version=1, device="cpu", threads=1, runtime="torch"
        )
        on_torch.warm_up()
        rows += model_only.measure(on_torch, token_ids, plan)
    if torch.cuda.is_available():
        cuda = Classifier.from_artifact(model.artifact, version=1, device="cuda")
        cuda.warm_up()
        rows += model_only.measure(cuda, token_ids, plan)
    return rows


def run(plan: Plan, command: str) -> Results:
    progress = Progress()
    corpus_articles = progress.step("articles and model", articles)
    serving: BenchModel = serving_model(train=plan.train, toy=plan.mode == "smoke")
    model = serving.classifier(threads=1)
    texts = [a.text for a in corpus_articles]
    token_ids = model.encode(texts)
    rows = progress.step("1. model only", lambda: model_section(model, token_ids, plan))
    worker_path, padding = model_only.worker_path_rate(model, token_ids, plan)
    encode = model_only.encode_rate(model, texts[: plan.model_articles], plan.repeats)
    with kafka() as settings, tempfile.TemporaryDirectory(prefix="tagstream-bench-") as tmp:
        directory = Path(tmp)
        topics = Topics(settings)
        source = topics.create("source")
        fill(settings, source, messages(corpus_articles))
        ceiling = progress.step(
            "2. client ceiling",
            lambda: Spread.of(
                [
                    client.ceiling_rate(settings, source, len(corpus_articles))
                    for _ in range(plan.repeats)
                ]
            ),
        )
        output = topics.create("naive.out")
        naive = progress.step(
            "4. naive loop",
            lambda: Spread.of(
                [
                    client.naive_rate(settings, source, output, model, plan.naive_messages)
                    for _ in range(plan.repeats)
                ]
            ),
        )
        path = serving.write(directory)
        e2e = progress.step(
            "3, 5. end to end and scale-out",
            lambda: end_to_end.run(
                topics,
                plan,
                path,
                corpus_articles,
                directory,
                lambda: model_only.worker_path_once(model, token_ids, plan)[0],
            ),
        )
        peaks, replaced = progress.step(
            "6. memory",
            lambda: memory.measure(
                topics, size_variants(plan.model_sizes), corpus_articles, plan, directory
            ),
        )
    return Results(
        plan=plan,
        command=command,
        machine=describe(),
        model=serving.name,
        model_trained=serving.trained,
        model_parameters=serving.parameters,
        articles=len(corpus_articles),
        mean_tokens=sum(map(len, token_ids)) / len(token_ids),
        max_tokens=model.encoder.max_tokens,
        encode=encode,
        model_rows=rows,
        worker_path=worker_path,
        worker_path_padding=padding,
        ceiling=ceiling,
        naive=naive,
        end_to_end=e2e,
        memory=peaks,
        replaced_workers=replaced + e2e.replaced_workers,
        load_average=(progress.load_at_start, os.getloadavg()[0]),
        seconds=progress.elapsed(),
    )
