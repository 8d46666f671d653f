"""Classify with a loaded artifact: encode, score in any batch shape, decide labels.

Three ways to run a batch of sequences of different lengths, all giving each sequence the
scores it has alone (see ``model.network`` for why the padded paths are exact):

- ``packed``: one padded tensor packed with ``pack_padded_sequence`` (default on CUDA);
- ``bucketed``: sequences sorted by length and cut into buckets of similar lengths, each run as
  a padded tensor, so little time goes into padding (default on CPU, where it measured fastest);
- ``padded``: the whole batch as one padded tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch

from common.logging import get_logger
from model.artifact import Artifact
from model.encoder import TextEncoder
from model.errors import ModelError
from model.network import BiLSTMClassifier, build_network

log = get_logger("model.inference")

Strategy = Literal["packed", "bucketed", "padded"]
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
AT_LEAST_ONE = "at_least_one_label"
"""Manifest hyperparameter: when true, an article with no label over threshold gets its top one."""

BUCKET_MAX_ITEMS = 64
BUCKET_LENGTH_RATIO = 1.3
BUCKET_LENGTH_SLACK = 8


class Classifier:
    """A model ready to score: network in eval mode on its device, encoder, thresholds."""

    def __init__(
        self, artifact: Artifact, network: BiLSTMClassifier, *, version: int, device: torch.device
    ) -> None:
        self.artifact = artifact
        self.network = network
        self.version = version
        self.device = device
        self.encoder: TextEncoder = artifact.encoder
        self.labels: list[str] = list(artifact.manifest.labels)
        self.thresholds = np.asarray(artifact.manifest.thresholds, dtype=np.float32)
        self.at_least_one = bool(artifact.manifest.hyperparameters.get(AT_LEAST_ONE, False))
        self._strategy: Strategy = "packed" if device.type == "cuda" else "bucketed"
        self._traced: Forward | None = None

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, *, version: int, device: str = "auto", threads: int | None = None
    ) -> Classifier:
        """Build the network from ``artifact`` on ``device`` ("auto": CUDA when present)."""
        if threads is not None:
            torch.set_num_threads(threads)
        target = resolve_device(device)
        network = build_network(artifact.config, artifact.state).to(target).eval()
        return cls(artifact, network, version=version, device=target)

    @property
    def strategy(self) -> Strategy:
        """How :meth:`scores` lays out a batch (see the module docstring)."""
        return self._strategy

    @strategy.setter
    def strategy(self, value: Strategy) -> None:
        if value not in STRATEGIES:
            raise ModelError(f"strategy must be one of {STRATEGIES}, not {value!r}")
        self._strategy = value

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (1..max tokens each); never raises for a ``str``."""
        return self.encoder.encode(texts)

    def scores(self, token_ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Sigmoid scores ``[n, n_labels]`` in input order, the same in any batch."""
        sequences = [self._checked(ids) for ids in token_ids]
        return network_scores(
            self.network,
            sequences,
            device=self.device,
            strategy=self._strategy,
            padded_forward=self._traced,
        )

    def decide(self, scores_row: npt.ArrayLike) -> list[tuple[str, float]]:
        """Labels whose score reaches their threshold, best first (and the top label when
        the artifact asks for at least one and none qualifies)."""
        return decide_labels(scores_row, self.labels, self.thresholds, self.at_least_one)

    def warm_up(self) -> None:
        """Run a few batches of typical shapes so the first real batch is not slow; on the CPU,
        trace the padded path into one TorchScript call first (:func:`traced_padded`)."""
        if self.device.type == "cpu" and self._traced is None:
            self._traced = traced_padded(self.network)
        for length in (1, 16, 128):
            self.scores([[1] * length] * 4)

    def _checked(self, ids: Sequence[int]) -> list[int]:
        sequence = list(ids)[: self.encoder.max_tokens] or [1]
        if min(sequence) < 0 or max(sequence) >= self.artifact.config.vocab_size:
            raise ModelError(f"token ids must be in [0, {self.artifact.config.vocab_size})")
        return sequence


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
    row = np.asarray(scores_row, dtype=np.float32).reshape(-1)
    if row.shape[0] != len(labels):
        raise ModelError(f"{row.shape[0]} scores for {len(labels)} labels")
    chosen = np.flatnonzero(decide(row[None, :], thresholds, at_least_one)[0])
    ordered = chosen[np.argsort(-row[chosen], kind="stable")]
    return [(labels[i], float(row[i])) for i in ordered]


class _Padded(torch.nn.Module):
    """The network on padded input (``packed=False``), as one module with two inputs to trace."""

    def __init__(self, network: BiLSTMClassifier) -> None:
        super().__init__()
        self.network = network

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network(ids, lengths, packed=False)
        return logits


def traced_padded(network: BiLSTMClassifier) -> Forward | None:
    """The network's padded path traced with ``torch.jit.trace``, or None when that fails or
    differs from the network on any of a few shapes (then the network runs as it is).

    A traced call runs the whole forward pass in TorchScript without the GIL, where the
    network called from Python takes the GIL back after each of its ~20 operators; in a
    worker whose other threads hold the GIL that was most of a batch's time
    (docs/benchmarks.md, "Worker overhead, round 2"). The operators are the same, so the
    scores are the same to the bit, which the check below insists on.
    """
    rng = np.random.default_rng(0)
    vocab = network.config.vocab_size
    shapes = ((4, 16), (1, 1), (3, 130), (64, 7))
    examples = [pad(rng.integers(1, vocab, size=s).tolist()) for s in shapes]
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            # torch 2.15 deprecates jit.trace for torch.compile (a C compiler at run time) and
            # torch.export (whose modules run operator by operator from Python again): when it
            # goes, this returns None and says so, and the plain network serves.
            warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                _Padded(network).eval(), examples[0], check_trace=False
            )
            for ids, lengths in examples:
                if not torch.equal(traced(ids, lengths), network(ids, lengths, packed=False)):
                    log.warning("model.trace_differs", shape=list(ids.shape))
                    return None
    except Exception as exc:  # tracing is an optimisation: the plain network still works
        log.warning("model.trace_failed", error=f"{type(exc).__name__}: {exc}")
        return None
    forward: Forward = traced
    return forward


def network_scores(
    network: BiLSTMClassifier,
    sequences: Sequence[Sequence[int]],
    *,
    device: torch.device,
    strategy: Strategy = "bucketed",
    padded_forward: Forward | None = None,
) -> npt.NDArray[np.float32]:
    """Sigmoid scores of valid, non-empty id sequences, in input order (network in eval mode);
    ``padded_forward`` (the network traced, :func:`traced_padded`) runs the padded layouts."""
    out = np.zeros((len(sequences), network.config.n_labels), dtype=np.float32)
    groups = (
        length_buckets([len(s) for s in sequences])
        if strategy == "bucketed"
        else iter([list(range(len(sequences)))] if sequences else [])
    )
    with torch.inference_mode():
        for indices in groups:
            ids, lengths = pad([sequences[i] for i in indices])
            if padded_forward is not None and strategy != "packed":
                logits = padded_forward(ids.to(device), lengths)
            else:
                logits = network(ids.to(device), lengths, packed=strategy == "packed")
            out[indices] = torch.sigmoid(logits).float().cpu().numpy()
    return out


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


def pad(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[n, longest]`` (pad id 0) and lengths ``[n]`` on the CPU."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    ids = np.zeros((len(sequences), int(lengths.max())), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: {exc}") from None
