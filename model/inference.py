"""Classify with a loaded artifact: encode, score in any batch shape, decide labels.

A :class:`Classifier` holds an artifact's encoder, labels and decision rule, and a *runtime*
that computes the scores:

- ``onnx`` (``model.onnx_runtime``): the network as one ONNX graph run by ONNX Runtime. The
  CPU default: a forward pass is one native call that holds no GIL, and torch is never
  imported (a worker's resident memory is a fraction of torch's; docs/benchmarks.md).
- ``torch`` (``model.torch_runtime``): the torch network; the CUDA default (packed
  sequences), and what training validates with.

Both give every sequence the scores it has alone, whatever it is batched with; they agree
with each other within about 1e-6 (``tests/model/test_runtimes.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt

from model.artifact import Artifact
from model.encoder import TextEncoder
from model.errors import ModelError

Strategy = Literal["packed", "bucketed", "padded"]
"""How a runtime lays out a batch: packed sequences, buckets of similar lengths, or padded."""
STRATEGIES: tuple[str, ...] = get_args(Strategy)
RuntimeName = Literal["auto", "torch", "onnx"]
RUNTIMES: tuple[str, ...] = get_args(RuntimeName)
AT_LEAST_ONE = "at_least_one_label"
"""Manifest hyperparameter: when true, an article with no label over threshold gets its top one."""

BUCKET_MAX_ITEMS = 64
BUCKET_LENGTH_RATIO = 1.3
BUCKET_LENGTH_SLACK = 8
NVIDIA_DEVICE = Path("/dev/nvidiactl")
"""Present where an NVIDIA driver is loaded; without it ``auto`` is the CPU, torch unasked."""


class Runtime(Protocol):
    """What computes a classifier's scores."""

    name: str
    bucket_size: int
    """At most this many sequences in one of the ``bucketed`` layout's forward passes."""

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda``."""

    @property
    def strategy(self) -> Strategy: ...

    @strategy.setter
    def strategy(self, value: Strategy) -> None: ...

    def prepare(self) -> None:
        """Anything to do once before serving (tracing, a first run)."""

    def scores(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Sigmoid scores ``[n, n_labels]`` of valid, non-empty id sequences, in input order."""


class Classifier:
    """A model ready to score: a runtime, the encoder, the labels and their thresholds."""

    def __init__(self, artifact: Artifact, runtime: Runtime, *, version: int) -> None:
        self.artifact = artifact
        self.runtime = runtime
        self.version = version
        self.encoder: TextEncoder = artifact.encoder
        self.labels: list[str] = list(artifact.manifest.labels)
        self.thresholds = np.asarray(artifact.manifest.thresholds, dtype=np.float32)
        self.at_least_one = bool(artifact.manifest.hyperparameters.get(AT_LEAST_ONE, False))

    @classmethod
    def from_artifact(
        cls,
        artifact: Artifact,
        *,
        version: int,
        device: str = "auto",
        threads: int | None = None,
        runtime: RuntimeName = "auto",
        bucket_size: int = BUCKET_MAX_ITEMS,
    ) -> Classifier:
        """The artifact's model on ``device`` ("auto": CUDA when present) with ``runtime``
        ("auto": ONNX Runtime on the CPU, torch on CUDA); the ``bucketed`` layout puts at most
        ``bucket_size`` sequences in a forward pass."""
        if bucket_size < 1:
            raise ModelError(f"bucket_size must be at least 1, not {bucket_size}")
        chosen = build_runtime(artifact, device, threads, runtime)
        chosen.bucket_size = bucket_size
        return cls(artifact, chosen, version=version)

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda``."""
        return self.runtime.device

    @property
    def strategy(self) -> Strategy:
        """How :meth:`scores` lays out a batch (see the runtimes' modules)."""
        return self.runtime.strategy

    @strategy.setter
    def strategy(self, value: Strategy) -> None:
        self.runtime.strategy = value

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (1..max tokens each); never raises for a ``str``."""
        return self.encoder.encode(texts)

    def scores(self, token_ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Sigmoid scores ``[n, n_labels]`` in input order, the same in any batch."""
        return self.runtime.scores([self._checked(ids) for ids in token_ids])

    def decide(self, scores_row: npt.ArrayLike) -> list[tuple[str, float]]:
        """Labels whose score reaches their threshold, best first (and the top label when
        the artifact asks for at least one and none qualifies)."""
        return decide_labels(scores_row, self.labels, self.thresholds, self.at_least_one)

    def decide_rows(self, scores: npt.ArrayLike) -> list[list[tuple[str, float]]]:
        """:meth:`decide` for every row of ``[n, n_labels]`` scores at once."""
        return decide_label_rows(scores, self.labels, self.thresholds, self.at_least_one)

    def warm_up(self) -> None:
        """Prepare the runtime, then run a few batches of typical shapes so the first real
        batch is not slow."""
        self.runtime.prepare()
        for length in (1, 16, 128):
            self.scores([[1] * length] * 4)

    def _checked(self, ids: Sequence[int]) -> list[int]:
        sequence = list(ids)[: self.encoder.max_tokens] or [1]
        if min(sequence) < 0 or max(sequence) >= self.artifact.config.vocab_size:
            raise ModelError(f"token ids must be in [0, {self.artifact.config.vocab_size})")
        return sequence


def build_runtime(
    artifact: Artifact, device: str, threads: int | None, runtime: RuntimeName
) -> Runtime:
    """The runtime that scores ``artifact`` (see :meth:`Classifier.from_artifact`)."""
    if runtime not in RUNTIMES:
        raise ModelError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    target = resolve_device(device)
    if runtime == "onnx" or (runtime == "auto" and target == "cpu"):
        if target != "cpu":
            raise ModelError("the onnx runtime runs on the CPU only; use the torch runtime")
        from model.onnx_runtime import OnnxRuntime  # noqa: PLC0415 - the CPU never loads torch

        return OnnxRuntime.from_artifact(artifact, threads)
    from model.torch_runtime import TorchRuntime  # noqa: PLC0415

    return TorchRuntime.from_artifact(artifact, target, threads)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when an NVIDIA device is present and torch can use it, else
    ``cpu``; ``cpu`` or ``cuda`` (``cuda:N``) as given. Torch is imported only to ask about
    a GPU that exists."""
    if device == "auto":
        if not NVIDIA_DEVICE.exists():
            return "cpu"
        import torch  # noqa: PLC0415

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device in {"cpu", "cuda"} or device.startswith("cuda:"):
        return device
    raise ModelError(f"unknown device {device!r}: cpu, cuda, cuda:N or auto")


def decide(
    scores: npt.NDArray[np.float32], thresholds: npt.ArrayLike, at_least_one: bool = False
) -> npt.NDArray[np.bool_]:
    """The decision rule, the one place it lives: ``[n, n_labels]`` booleans, true where a
    score reaches its label's threshold; with ``at_least_one``, a row with none true gets its
    top-scoring label. Workers (via :meth:`Classifier.decide`), threshold tuning and every
    evaluation use this function."""
    chosen = scores >= np.asarray(thresholds, dtype=np.float32)[None, :]
    if at_least_one and len(scores):
        empty = ~chosen.any(axis=1)
        chosen[np.flatnonzero(empty), scores[empty].argmax(axis=1)] = True
    return chosen


def decide_labels(
    scores_row: npt.ArrayLike,
    labels: Sequence[str],
    thresholds: npt.NDArray[np.float32],
    at_least_one: bool,
) -> list[tuple[str, float]]:
    """One article's labels by :func:`decide`, as (name, score) pairs, best first."""
    row = np.asarray(scores_row, dtype=np.float32).reshape(1, -1)
    return decide_label_rows(row, labels, thresholds, at_least_one)[0]


def decide_label_rows(
    scores: npt.ArrayLike,
    labels: Sequence[str],
    thresholds: npt.NDArray[np.float32],
    at_least_one: bool,
) -> list[list[tuple[str, float]]]:
    """:func:`decide_labels` for each row of ``[n, n_labels]`` scores, in a few array
    operations for the whole batch instead of a few per article."""
    matrix = np.asarray(scores, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != len(labels):
        raise ModelError(f"scores of shape {matrix.shape} for {len(labels)} labels")
    rows, columns = np.nonzero(decide(matrix, thresholds, at_least_one))
    values = matrix[rows, columns]
    order = np.lexsort((-values, rows))  # by row, then best first; ties keep label order
    decided: list[list[tuple[str, float]]] = [[] for _ in range(matrix.shape[0])]
    for row, column, value in zip(
        rows[order].tolist(), columns[order].tolist(), values[order].tolist(), strict=True
    ):
        decided[row].append((labels[column], value))
    return decided


def length_buckets(
    lengths: Sequence[int],
    *,
    max_items: int = BUCKET_MAX_ITEMS,
    ratio: float = BUCKET_LENGTH_RATIO,
    slack: int = BUCKET_LENGTH_SLACK,
) -> Iterator[list[int]]:
    """Indices grouped by similar length: sorted, a bucket closes at ``max_items`` or when the
    next length exceeds ``ratio`` x the bucket's shortest plus ``slack``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    bucket: list[int] = []
    for index in order:
        if bucket and (
            len(bucket) >= max_items or lengths[index] > lengths[bucket[0]] * ratio + slack
        ):
            yield bucket
            bucket = []
        bucket.append(index)
    if bucket:
        yield bucket


def layout_groups(
    lengths: Sequence[int], strategy: Strategy, bucket_size: int = BUCKET_MAX_ITEMS
) -> Iterator[list[int]]:
    """The index groups one forward pass each: length buckets, or the whole batch."""
    if strategy == "bucketed":
        return length_buckets(lengths, max_items=bucket_size)
    return iter([list(range(len(lengths)))] if lengths else [])


def padded_arrays(
    sequences: Sequence[Sequence[int]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Right-padded ids ``[n, longest]`` (pad id 0) and lengths ``[n]``."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    ids = np.zeros((len(sequences), int(lengths.max())), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
    return ids, lengths
