"""Models for the monitor's and the shadow's tests."""

from __future__ import annotations

import dataclasses

from model.artifact import Artifact
from model.toy import toy_artifact
from tests.worker.harness import LABELS

PRIORS = {"earn": 0.7, "acq": 0.2, "crude": 0.1}
"""Training priors the toy artifacts claim: far from the even mix "label everything" gives."""


def with_thresholds(value: float, seed: int) -> Artifact:
    """A valid toy artifact whose every threshold is ``value``: 0.001 labels everything (some
    labels right), 0.999 labels nothing (every label wrong)."""
    artifact = toy_artifact(LABELS, seed=seed)
    training = artifact.manifest.training_data.model_copy(update={"label_priors": PRIORS})
    manifest = artifact.manifest.model_copy(
        update={"thresholds": [value] * len(LABELS), "training_data": training}
    )
    return dataclasses.replace(artifact, manifest=manifest)
