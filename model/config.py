"""The network's shape: the settings a trainer chooses and an artifact records, and the name
and shape of every weight they imply. Plain data, no torch: the worker's CPU path reads an
artifact without importing it (``model.graph``), and the torch network (``model.network``) is
built from the same :class:`NetworkConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from model.errors import ModelError

Pooling = Literal["max", "mean", "max_mean", "final"]
POOLINGS: tuple[str, ...] = ("max", "mean", "max_mean", "final")


@dataclass(frozen=True, kw_only=True)
class NetworkShape:
    """The network's settings that do not depend on the data. Declared once, here: a training
    profile extends this class, and :class:`NetworkConfig` adds the vocabulary and label
    counts."""

    embedding_dim: int = 100
    hidden_size: int = 128
    layers: int = 1
    embedding_dropout: float = 0.3
    layer_dropout: float = 0.0
    head_dropout: float = 0.3
    pooling: Pooling = "max"
    bag_of_words: bool = False
    """Add a linear path over the TF-IDF bag of words to the logits (wide & deep)."""

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_size", "layers"):
            if getattr(self, name) < 1:
                raise ModelError(f"network {name} must be at least 1, not {getattr(self, name)}")
        for name in ("embedding_dropout", "layer_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ModelError(f"network {name} must be in [0, 1), not {getattr(self, name)}")
        if self.pooling not in POOLINGS:
            raise ModelError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig(NetworkShape):
    """The complete shape of a network; saved in the artifact beside the weights."""

    vocab_size: int
    n_labels: int

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_labels"):
            if getattr(self, name) < 1:
                raise ModelError(f"network {name} must be at least 1, not {getattr(self, name)}")
        super().__post_init__()

    @classmethod
    def for_data(cls, shape: NetworkShape, *, vocab_size: int, n_labels: int) -> NetworkConfig:
        """``shape``'s network settings (from any :class:`NetworkShape`, such as a training
        profile) for a vocabulary and a label set."""
        chosen = {f.name: getattr(shape, f.name) for f in fields(NetworkShape)}
        return cls(vocab_size=vocab_size, n_labels=n_labels, **chosen)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not ignored."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelError(f"unknown network settings: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelError(f"bad network settings: {exc}") from None

    @property
    def pooled_size(self) -> int:
        """Width of the vector the head reads."""
        return 2 * self.hidden_size * (2 if self.pooling == "max_mean" else 1)


def parameter_shapes(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor in a network's state dict, without building one."""
    gates, hidden = 4 * config.hidden_size, config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "embedding.weight": (config.vocab_size, config.embedding_dim)
    }
    for layer in range(config.layers):
        inputs = config.embedding_dim if layer == 0 else 2 * hidden
        for direction in ("forward_rnns", "backward_rnns"):
            prefix = f"{direction}.{layer}."
            shapes |= {
                prefix + "weight_ih_l0": (gates, inputs),
                prefix + "weight_hh_l0": (gates, hidden),
                prefix + "bias_ih_l0": (gates,),
                prefix + "bias_hh_l0": (gates,),
            }
    shapes |= {
        "head.weight": (config.n_labels, config.pooled_size),
        "head.bias": (config.n_labels,),
    }
    if config.bag_of_words:
        shapes |= {"wide.weight": (config.n_labels, config.vocab_size), "idf": (config.vocab_size,)}
    return shapes
