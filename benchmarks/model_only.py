"""Model only: articles/s and tokens/s of forward passes on pre-encoded articles.

Every runtime x batch size x layout it offers (torch: ``packed``, ``bucketed``, ``padded``;
ONNX Runtime: ``bucketed``, ``padded``; see ``model.inference``) is timed ``repeats`` times,
the repeats interleaved so a noisy spell hits every cell alike. Also timed: the worker's own
scoring path at its batch settings (``worker.inference.Scorer``, the figure the end-to-end
throughput is compared with) and the encoder on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.plan import Plan
from benchmarks.stats import Spread, rate
from model.inference import Classifier, Strategy, length_buckets
from worker.inference import Scorer

LAYOUTS: dict[str, tuple[Strategy, ...]] = {
    "torch": ("packed", "bucketed", "padded"),
    "onnx": ("bucketed", "padded"),
}


@dataclass(frozen=True)
class ModelRow:
    device: str
    runtime: str
    strategy: str
    batch_size: int
    articles_per_s: Spread
    tokens_per_s: float
    padding_ratio: float
    """Share of the LSTM's steps spent on padding (0 when packed: it runs real steps only)."""


@dataclass(frozen=True)
class Cell:
    strategy: Strategy
    batch_size: int
    batches: list[list[list[int]]]

    @property
    def articles(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def tokens(self) -> int:
        return sum(len(ids) for b in self.batches for ids in b)


def chunks(token_ids: Sequence[list[int]], size: int, count: int) -> list[list[list[int]]]:
    picked = [token_ids[i % len(token_ids)] for i in range(count)]
    return [picked[start : start + size] for start in range(0, count, size)]


def cells(token_ids: Sequence[list[int]], plan: Plan, layouts: Sequence[Strategy]) -> list[Cell]:
    result = []
    for size in plan.batch_sizes:
        count = plan.model_articles // 4 if size == 1 else max(plan.model_articles, 2 * size)
        batches = chunks(token_ids, size, count)
        result += [Cell(strategy, size, batches) for strategy in layouts]
    return result


def padding_ratio(cell: Cell) -> float:
    """1 - real steps / steps run, over the cell's batches, as its layout runs them."""
    if cell.strategy == "packed":
        return 0.0
    padded = 0
    for batch in cell.batches:
        lengths = [len(ids) for ids in batch]
        groups = length_buckets(lengths) if cell.strategy == "bucketed" else [range(len(batch))]
        padded += sum(max(lengths[i] for i in g) * len(g) for g in groups)
    return 1.0 - cell.tokens / padded


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_cell(model: Classifier, cell: Cell) -> float:
    model.strategy = cell.strategy
    return seconds(lambda: [model.scores(batch) for batch in cell.batches])


def measure(model: Classifier, token_ids: Sequence[list[int]], plan: Plan) -> list[ModelRow]:
    """One row per batch size x layout of ``model``'s runtime on its device."""
    runtime = model.runtime.name
    grid = cells(token_ids, plan, LAYOUTS[runtime])
    times: list[list[float]] = [[] for _ in grid]
    for _ in range(plan.repeats):
        for cell, measured in zip(grid, times, strict=True):
            measured.append(run_cell(model, cell))
    model.strategy = "bucketed" if model.device == "cpu" else "packed"
    return [
        ModelRow(
            device=model.device,
            runtime=runtime,
            strategy=cell.strategy,
            batch_size=cell.batch_size,
            articles_per_s=Spread.of([rate(cell.articles, s) for s in measured]),
            tokens_per_s=rate(cell.tokens, sorted(measured)[len(measured) // 2]),
            padding_ratio=padding_ratio(cell),
        )
        for cell, measured in zip(grid, times, strict=True)
    ]


def worker_path_once(
    model: Classifier, token_ids: Sequence[list[int]], plan: Plan
) -> tuple[float, float]:
    """Articles/s and padding ratio of the worker's scoring path (``Scorer`` with its
    ``bucket_size`` = ``max_batch_size``) on full batches of ``plan.worker_batch_size``."""
    scorer = Scorer(plan.worker_batch_size)
    batches = chunks(token_ids, plan.worker_batch_size, max(plan.model_articles, 256))
    started = time.perf_counter()
    scored = [scorer.score(model, batch) for batch in batches]
    elapsed = time.perf_counter() - started
    real = sum(s.real_tokens for s in scored)
    padded = sum(s.padded_tokens for s in scored)
    return rate(sum(len(b) for b in batches), elapsed), 1.0 - real / padded


def worker_path_rate(
    model: Classifier, token_ids: Sequence[list[int]], plan: Plan
) -> tuple[Spread, float]:
    """:func:`worker_path_once` ``plan.repeats`` times: articles/s and the padding ratio."""
    runs = [worker_path_once(model, token_ids, plan) for _ in range(plan.repeats)]
    return Spread.of([r for r, _ in runs]), runs[-1][1]


def encode_rate(model: Classifier, texts: Sequence[str], repeats: int) -> Spread:
    """Articles/s of the text encoder (tokenise + ids), one call per 64 articles."""
    batches = [list(texts[start : start + 64]) for start in range(0, len(texts), 64)]
    return Spread.of(
        [
            rate(len(texts), seconds(lambda: [model.encode(b) for b in batches]))
            for _ in range(repeats)
        ]
    )
