"""The network as one ONNX graph, built from the artifact's weights without torch.

The CPU serving path (``model.runtime``) runs this graph with ONNX Runtime: a whole forward
pass is one native call that holds no GIL, where the torch network called from Python takes
the GIL back after each of its operators, and a worker on the CPU never imports torch.

The graph computes what :class:`model.network.BiLSTMClassifier` computes:

- the embedding is a ``Gather``;
- each layer is one bidirectional ONNX ``LSTM`` given every sequence's length
  (``sequence_lens``): the forward direction stops at a sequence's last real step and the
  backward one starts there, so padding never reaches a real step's state, the same guarantee
  the torch network gets by mirroring each sequence in place;
- pooling masks the padded steps (max, mean, or ``final``: the forward state at the last real
  step and the backward state at the first, which are the LSTM's ``Y_h``);
- the bag-of-words path is computed per token position, with no ``[batch, vocabulary]``
  tensor: a position holding a token that occurs ``tf`` times among the row's real tokens
  weighs ``(1 + log tf) * idf / tf``, so the row's positions of one token add up to its TF-IDF
  weight; the row's L2 norm is the square root of the sum over positions of
  ``weight² / tf``. The logits add ``Σ_positions weight x wide.weight[:, token]``.

Inputs: ``ids`` int64 ``[batch, steps]`` (right-padded with 0) and ``lengths`` int64
``[batch]`` (each at least 1). Output: ``scores`` float32 ``[batch, labels]``, sigmoid
applied. Gate order: torch's LSTM weights are blocks ``i, f, g, o``; ONNX wants ``i, o, f, c``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from model.config import NetworkConfig, parameter_shapes
from model.errors import ModelError

OPSET = 17
TORCH_TO_ONNX_GATES = (0, 3, 1, 2)
"""Block order: torch (input, forget, cell, output) -> ONNX (input, output, forget, cell)."""

Weights = Mapping[str, npt.NDArray[np.float32]]


def onnx_model(config: NetworkConfig, state: Weights, *, slots: int = 1) -> bytes:
    """The serialised ONNX model of the network ``config`` with weights ``state``.

    With ``slots`` > 1 the graph holds that many independent copies of the forward pass,
    sharing the weights: inputs ``ids_K`` and ``lengths_K``, output ``scores_K`` for slot K,
    so one ``run`` scores several padded buckets of different lengths. A caller that has
    fewer buckets fills the other slots with a one-token sequence."""
    if slots < 1:
        raise ModelError(f"slots must be at least 1, not {slots}")
    expected = parameter_shapes(config)
    actual = {name: tuple(np.shape(value)) for name, value in state.items()}
    if actual != expected:
        raise ModelError("weights do not fit the network configuration")
    builder = _Builder(config, state)
    weights = {t.name for t in builder.initializers}
    nodes, inputs, outputs = [], [], []
    for slot in range(slots):
        suffix = f"_{slot}" if slots > 1 else ""
        nodes += [_renamed(node, weights, suffix) for node in builder.nodes]
        batch, steps = f"batch{suffix}", f"steps{suffix}"  # sizes differ between slots
        inputs += [
            helper.make_tensor_value_info(f"ids{suffix}", TensorProto.INT64, [batch, steps]),
            helper.make_tensor_value_info(f"lengths{suffix}", TensorProto.INT64, [batch]),
        ]
        outputs.append(
            helper.make_tensor_value_info(
                f"scores{suffix}", TensorProto.FLOAT, [batch, config.n_labels]
            )
        )
    graph = helper.make_graph(
        nodes, "tagstream_bilstm", inputs, outputs, initializer=builder.initializers
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tagstream"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


class _Builder:
    """Appends the nodes of the forward pass, naming each output after what it holds."""

    def __init__(self, config: NetworkConfig, state: Weights) -> None:
        self.config = config
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: set[str] = set()
        self._build()

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def constant(self, name: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        """An initializer named ``name`` (added once; layers share their shape constants)."""
        if name not in self._constants:
            self._constants.add(name)
            array: npt.NDArray[Any] = np.asarray(value, dtype=dtype)
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def _build(self) -> None:
        config = self.config
        steps_first = self._masks()
        states = self.node(
            "Gather",
            [self.constant("embedding", self.weight("embedding.weight")), "ids"],
            "embedded",
        )
        states = self.node("Transpose", [states], "steps_first", perm=[1, 0, 2])
        finals = ""
        for layer in range(config.layers):
            states, finals = self._lstm(layer, states)
        pooled = self._pool(states, finals, steps_first)
        logits = self.node(
            "Gemm",
            [
                pooled,
                self.constant("head_weight", self.weight("head.weight")),
                self.constant("head_bias", self.weight("head.bias")),
            ],
            "head_logits",
            transB=1,
        )
        if config.bag_of_words:
            logits = self.node("Add", [logits, self._wide()], "logits")
        self.node("Sigmoid", [logits], "scores")

    def weight(self, name: str) -> npt.NDArray[np.float32]:
        return np.asarray(self.state[name], dtype=np.float32)

    def _masks(self) -> str:
        """``real`` ``[batch, steps]`` and ``real_steps_first`` ``[steps, batch, 1]`` booleans."""
        self.node("Cast", ["lengths"], "lengths_i32", to=TensorProto.INT32)
        self.node("Cast", ["lengths"], "lengths_f", to=TensorProto.FLOAT)
        self.node("Shape", ["ids"], "ids_shape")
        self.node("Gather", ["ids_shape", self.constant("one", 1, np.int64)], "steps")
        self.node("Range", [self.constant("zero", 0, np.int64), "steps", "one"], "positions")
        self.node(
            "Unsqueeze", ["positions", self.constant("axis_0", [0], np.int64)], "positions_row"
        )
        self.node(
            "Unsqueeze", ["lengths", self.constant("axis_1", [1], np.int64)], "lengths_column"
        )
        self.node("Less", ["positions_row", "lengths_column"], "real")
        self.node("Transpose", ["real"], "real_t", perm=[1, 0])
        return self.node(
            "Unsqueeze", ["real_t", self.constant("axis_2", [2], np.int64)], "real_steps_first"
        )

    def _lstm(self, layer: int, inputs: str) -> tuple[str, str]:
        """One bidirectional layer: ``[steps, batch, 2 x hidden]`` states and ``Y_h``."""
        w, r, b = [], [], []
        for direction in ("forward_rnns", "backward_rnns"):
            prefix = f"{direction}.{layer}."
            w.append(_onnx_gates(self.weight(prefix + "weight_ih_l0")))
            r.append(_onnx_gates(self.weight(prefix + "weight_hh_l0")))
            b.append(
                np.concatenate(
                    [
                        _onnx_gates(self.weight(prefix + "bias_ih_l0")),
                        _onnx_gates(self.weight(prefix + "bias_hh_l0")),
                    ]
                )
            )
        name = f"lstm{layer}"
        outputs = [f"{name}_y", f"{name}_h"]
        self.nodes.append(
            helper.make_node(
                "LSTM",
                [
                    inputs,
                    self.constant(f"{name}_w", np.stack(w)),
                    self.constant(f"{name}_r", np.stack(r)),
                    self.constant(f"{name}_b", np.stack(b)),
                    "lengths_i32",
                ],
                outputs,
                name=name,
                direction="bidirectional",
                hidden_size=self.config.hidden_size,
            )
        )
        # Y is [steps, directions, batch, hidden]; the next layer and pooling read both
        # directions side by side per step.
        joined = self.node("Transpose", [outputs[0]], f"{name}_steps", perm=[0, 2, 1, 3])
        states = self.node(
            "Reshape", [joined, self.constant("keep_two", [0, 0, -1], np.int64)], f"{name}_states"
        )
        return states, outputs[1]

    def _pool(self, states: str, finals: str, real: str) -> str:
        pooling = self.config.pooling
        if pooling == "final":
            # Y_h [directions, batch, hidden]: forward at the last real step, backward at the first.
            batch_first = self.node("Transpose", [finals], "finals_batch_first", perm=[1, 0, 2])
            return self.node(
                "Reshape",
                [batch_first, self.constant("keep_one", [0, -1], np.int64)],
                "pooled",
            )
        pooled = []
        if pooling in ("max", "max_mean"):
            masked = self.node(
                "Where", [real, states, self.constant("minus_inf", -np.inf)], "masked_for_max"
            )
            pooled.append(self.node("ReduceMax", [masked], "max_pooled", axes=[0], keepdims=0))
        if pooling in ("mean", "max_mean"):
            zeroed = self.node(
                "Where", [real, states, self.constant("zero_f", 0.0)], "masked_for_mean"
            )
            total = self.node(
                "ReduceSum",
                [zeroed, self.constant("axis_0_sum", [0], np.int64)],
                "summed",
                keepdims=0,
            )
            count = self.node("Unsqueeze", ["lengths_f", "axis_1"], "lengths_f_column")
            pooled.append(self.node("Div", [total, count], "mean_pooled"))
        if len(pooled) == 1:
            return pooled[0]
        return self.node("Concat", pooled, "pooled", axis=1)

    def _wide(self) -> str:
        """The bag-of-words logits ``[batch, labels]`` (module docstring)."""
        node, constant = self.node, self.constant
        node("Unsqueeze", ["ids", "axis_2"], "ids_a")
        node("Unsqueeze", ["ids", "axis_1"], "ids_b")
        node("Equal", ["ids_a", "ids_b"], "same_token")
        node("Unsqueeze", ["real", "axis_1"], "real_b")
        node("And", ["same_token", "real_b"], "same_real")
        node("Cast", ["same_real"], "same_real_f", to=TensorProto.FLOAT)
        tf = node(
            "ReduceSum", ["same_real_f", constant("axis_2_sum", [2], np.int64)], "tf", keepdims=0
        )
        node("Max", [tf, constant("one_f", 1.0)], "tf_safe")
        node("Log", ["tf_safe"], "log_tf")
        node("Add", ["log_tf", "one_f"], "sublinear_tf")
        node("Gather", [constant("idf", self.weight("idf")), "ids"], "token_idf")
        node("Mul", ["sublinear_tf", "token_idf"], "token_weight")
        node("Cast", ["real"], "real_f", to=TensorProto.FLOAT)
        node("Div", ["real_f", "tf_safe"], "share")  # 1/tf at real steps, 0 at padding
        node("Mul", ["token_weight", "share"], "position_weight")
        node("Mul", ["position_weight", "token_weight"], "position_square")
        node(
            "ReduceSum",
            ["position_square", constant("axis_1_sum", [1], np.int64)],
            "square_norm",
            keepdims=1,
        )
        node("Sqrt", ["square_norm"], "norm")
        node("Max", ["norm", constant("tiny", 1e-12)], "norm_safe")
        node("Div", ["position_weight", "norm_safe"], "normalised")
        wide = self.weight("wide.weight").T.copy()  # [vocabulary, labels]
        node("Gather", [constant("wide_by_token", wide), "ids"], "token_logits")
        node("Unsqueeze", ["normalised", "axis_2"], "normalised_3d")
        node("Mul", ["token_logits", "normalised_3d"], "weighted_logits")
        return node("ReduceSum", ["weighted_logits", "axis_1_sum"], "wide_logits", keepdims=0)


def _renamed(node: onnx.NodeProto, shared: set[str], suffix: str) -> onnx.NodeProto:
    """A copy of ``node`` whose names, but for the ``shared`` weights, end in ``suffix``."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    if suffix:
        copy.name += suffix
        for names in (copy.input, copy.output):
            for index, name in enumerate(names):
                if name and name not in shared:
                    names[index] = name + suffix
    return copy


def _onnx_gates(weight: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Reorder the four gate blocks along the first axis from torch's order to ONNX's."""
    blocks = np.split(weight, 4, axis=0)
    return np.concatenate([blocks[i] for i in TORCH_TO_ONNX_GATES], axis=0)
