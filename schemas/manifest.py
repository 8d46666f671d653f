"""Model manifests: what a model artifact is, how it was made and how well it did."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from schemas.base import Contract


class TrainingDataSummary(Contract):
    """Where the training examples came from and how many there were."""

    train_documents: int = Field(ge=0)
    validation_documents: int = Field(ge=0)
    holdout_documents: int = Field(default=0, ge=0)
    feedback_documents: int = Field(default=0, ge=0)
    source: str = "reuters-21578"
    label_priors: dict[str, float] = Field(default_factory=dict)
    """Share of training documents carrying each label: the baseline of output drift."""


class ModelManifest(Contract):
    """The JSON that travels beside (and inside) a model artifact.

    ``version``, ``artifact_sha256``, ``artifact_bytes`` and ``signature`` are assigned by the
    registry on publication; the copy embedded in the artifact itself has none of them, since
    it cannot know its own hash.
    """

    schema_version: Literal[1] = 1
    version: int | None = Field(default=None, ge=1)
    created_at: datetime
    labels: list[str] = Field(min_length=1)
    thresholds: list[float]
    encoder_digest: str = Field(min_length=8)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    training_data: TrainingDataSummary
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    artifact_bytes: int | None = Field(default=None, ge=0)
    signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """HMAC-SHA256 of every other field (``model.signing``), written when the registry has a
    signing key (``TAGSTREAM_REGISTRY_SIGNING_KEY``); None when it has none."""

    @model_validator(mode="after")
    def _one_threshold_per_label(self) -> ModelManifest:
        if len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("label names repeat")
        return self
