"""Models for the monitor's and the shadow's tests."""

from __future__ import annotations

import dataclasses

from model.artifact import Artifact
from model.toy import toy_artifact
from tests.worker.harness import LABELS


def with_thresholds(value: float, seed: int) -> Artifact:
    """A valid toy artifact whose every threshold is ``value``: 0.001 labels everything (some
    labels right), 0.999 labels nothing (every label wrong)."""
    artifact = toy_artifact(LABELS, seed=seed)
    manifest = artifact.manifest.model_copy(update={"thresholds": [value] * len(LABELS)})
    return dataclasses.replace(artifact, manifest=manifest)
