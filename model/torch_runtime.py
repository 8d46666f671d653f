"""The torch runtime: the network as ``torch`` runs it, on CUDA or the CPU.

Three ways to lay out a batch of sequences of different lengths, all giving each sequence the
scores it has alone (see ``model.network`` for why the padded layouts are exact):

- ``packed``: one padded tensor packed with ``pack_padded_sequence`` (the default on CUDA);
- ``bucketed``: sequences sorted by length and cut into buckets of similar lengths, each run as
  a padded tensor, so little time goes into padding (the default on the CPU);
- ``padded``: the whole batch as one padded tensor.

On the CPU the padded layouts run the network traced into one TorchScript call
(:func:`traced_padded`). The worker serves the CPU with ``model.onnx_runtime`` instead, unless
told otherwise (``TAGSTREAM_WORKER_RUNTIME=torch``); training, and CUDA, use this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from common.logging import get_logger
from model.artifact import Artifact
from model.errors import ModelError
from model.inference import (
    BUCKET_MAX_ITEMS,
    STRATEGIES,
    Strategy,
    layout_groups,
    padded_arrays,
)
from model.network import BiLSTMClassifier, build_network

log = get_logger("model.torch_runtime")

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TorchRuntime:
    """The network in eval mode on its device; scores batches in any layout."""

    name = "torch"

    def __init__(self, network: BiLSTMClassifier, device: torch.device) -> None:
        self.network = network
        self.torch_device = device
        self._strategy: Strategy = "packed" if device.type == "cuda" else "bucketed"
        self._traced: Forward | None = None
        self.bucket_size = BUCKET_MAX_ITEMS

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: str, threads: int | None) -> TorchRuntime:
        if threads is not None:
            torch.set_num_threads(threads)
        target = torch_device(device)
        network = build_network(artifact.config, artifact.state).to(target).eval()
        return cls(network, target)

    @property
    def device(self) -> str:
        return self.torch_device.type

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @strategy.setter
    def strategy(self, value: Strategy) -> None:
        if value not in STRATEGIES:
            raise ModelError(f"strategy must be one of {STRATEGIES}, not {value!r}")
        self._strategy = value

    def prepare(self) -> None:
        """On the CPU, trace the padded path into one TorchScript call."""
        if self.torch_device.type == "cpu" and self._traced is None:
            self._traced = traced_padded(self.network)

    def scores(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        return network_scores(
            self.network,
            sequences,
            device=self.torch_device,
            strategy=self._strategy,
            padded_forward=self._traced,
            bucket_size=self.bucket_size,
        )


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
    bucket_size: int = BUCKET_MAX_ITEMS,
) -> npt.NDArray[np.float32]:
    """Sigmoid scores of valid, non-empty id sequences, in input order (network in eval mode);
    ``padded_forward`` (the network traced, :func:`traced_padded`) runs the padded layouts."""
    out = np.zeros((len(sequences), network.config.n_labels), dtype=np.float32)
    with torch.inference_mode():
        for indices in layout_groups([len(s) for s in sequences], strategy, bucket_size):
            ids, lengths = pad([sequences[i] for i in indices])
            if padded_forward is not None and strategy != "packed":
                logits = padded_forward(ids.to(device), lengths)
            else:
                logits = network(ids.to(device), lengths, packed=strategy == "packed")
            out[indices] = torch.sigmoid(logits).float().cpu().numpy()
    return out


def pad(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[n, longest]`` (pad id 0) and lengths ``[n]`` on the CPU."""
    ids, lengths = padded_arrays(sequences)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def torch_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: {exc}") from None
