"""The ONNX runtime: the network as one ONNX graph (``model.graph``) run by ONNX Runtime.

The worker's CPU default. A batch is laid out as the torch runtime's ``bucketed`` or
``padded`` layouts lay it out (packing is the CUDA path's), and a whole batch is one
``InferenceSession.run``: the graph holds ``SLOTS`` copies of the forward pass sharing the
weights (``model.graph``), one padded bucket each, so the batch goes from ids to scores in
native code with the GIL released throughout. A thread that gives the GIL up has to win it
back afterwards, which takes up to the interpreter's switch interval (5 ms) while another
thread runs Python; one call per bucket paid that once per bucket, and in a worker whose
other threads decode, publish and poll, that waiting was about half of a batch's inference
time (docs/benchmarks.md, "Worker overhead, round 5"). Torch is not imported here.

The session runs on ``threads`` intra-op threads (1 by default, as the worker's torch runtime
does) and one inter-op thread, with every graph optimisation on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from model.artifact import Artifact
from model.errors import ModelError
from model.graph import onnx_model
from model.inference import BUCKET_MAX_ITEMS, Strategy, layout_groups, padded_arrays

LAYOUTS: tuple[Strategy, ...] = ("bucketed", "padded")
SLOTS = 8
"""Buckets one ``run`` can take; a batch of 64 has 4-5 on Reuters. Each unused slot costs a
one-token forward pass."""
FILLER = (np.ones((1, 1), dtype=np.int64), np.ones(1, dtype=np.int64))


class OnnxRuntime:
    """An ONNX Runtime session over the artifact's network, on the CPU."""

    name = "onnx"
    device = "cpu"

    def __init__(self, session: ort.InferenceSession, n_labels: int) -> None:
        self._session = session
        self._n_labels = n_labels
        self._strategy: Strategy = "bucketed"
        self.bucket_size = BUCKET_MAX_ITEMS

    @classmethod
    def from_artifact(cls, artifact: Artifact, threads: int | None) -> OnnxRuntime:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are not ours to act on
        graph = onnx_model(artifact.config, artifact.state, slots=SLOTS)
        try:
            session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail / InvalidGraph kinds
            raise ModelError(f"ONNX Runtime refused the model: {exc}") from None
        return cls(session, artifact.config.n_labels)

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @strategy.setter
    def strategy(self, value: Strategy) -> None:
        if value not in LAYOUTS:
            raise ModelError(f"the onnx runtime lays batches out as {LAYOUTS}, not {value!r}")
        self._strategy = value

    def prepare(self) -> None:
        """Nothing: the session was optimised when it was made."""

    def scores(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(sequences), self._n_labels), dtype=np.float32)
        sizes = [len(s) for s in sequences]
        groups = list(layout_groups(sizes, self._strategy, self.bucket_size))
        for start in range(0, len(groups), SLOTS):
            chunk = groups[start : start + SLOTS]
            feed = {}
            for slot in range(SLOTS):
                ids, lengths = (
                    padded_arrays([sequences[i] for i in chunk[slot]])
                    if slot < len(chunk)
                    else FILLER
                )
                feed[f"ids_{slot}"], feed[f"lengths_{slot}"] = ids, lengths
            results = self._session.run([f"scores_{slot}" for slot in range(len(chunk))], feed)
            for indices, scores in zip(chunk, results, strict=True):
                out[indices] = scores
        return out
