"""The ONNX runtime: the network as one ONNX graph (``model.graph``) run by ONNX Runtime.

The worker's CPU default. A batch is laid out as the torch runtime's ``bucketed`` or
``padded`` layouts lay it out (packing is the CUDA path's), and each forward pass is one
``InferenceSession.run``: native code from the ids to the scores, with the GIL released
throughout, so a worker's other threads do not slow it down the way they slow a network
whose every operator is a call from Python. Torch is not imported here.

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
from model.inference import Strategy, layout_groups, padded_arrays

LAYOUTS: tuple[Strategy, ...] = ("bucketed", "padded")


class OnnxRuntime:
    """An ONNX Runtime session over the artifact's network, on the CPU."""

    name = "onnx"
    device = "cpu"

    def __init__(self, session: ort.InferenceSession, n_labels: int) -> None:
        self._session = session
        self._n_labels = n_labels
        self._strategy: Strategy = "bucketed"

    @classmethod
    def from_artifact(cls, artifact: Artifact, threads: int | None) -> OnnxRuntime:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are not ours to act on
        graph = onnx_model(artifact.config, artifact.state)
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
        for indices in layout_groups([len(s) for s in sequences], self._strategy):
            ids, lengths = padded_arrays([sequences[i] for i in indices])
            (scores,) = self._session.run(["scores"], {"ids": ids, "lengths": lengths})
            out[indices] = scores
        return out
