"""A model artifact: one safetensors file that carries everything needed to classify.

Layout: the network weights are the safetensors tensors; the header's ``__metadata__`` has a
single key, ``tagstream``, whose value is one JSON document (keys sorted, so the same artifact
always gives the same bytes)::

    {"format": "tagstream-model/1",
     "manifest": {...ModelManifest, version and artifact_sha256 left null...},
     "encoder": "<TextEncoder.to_json()>",
     "network": {...NetworkConfig...}}

Loading checks the sha256 of the bytes first (when the caller knows it), then parses the
header by hand and the tensors with ``safetensors``: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from model.config import NetworkConfig, parameter_shapes
from model.encoder import TextEncoder
from model.errors import ArtifactError, ModelError
from schemas import ModelManifest

FORMAT = "tagstream-model/1"
METADATA_KEY = "tagstream"
MAX_HEADER_BYTES = 64 * 1024 * 1024


def sha256_hex(data: bytes) -> str:
    """Lower-case hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """Manifest, encoder, network shape and weights: a complete, self-consistent model."""

    manifest: ModelManifest
    encoder: TextEncoder
    config: NetworkConfig
    state: dict[str, npt.NDArray[Any]]
    """Weights by name, as numpy arrays (CPU torch tensors given here are read as arrays), so
    that reading an artifact needs no torch: the worker's CPU runtime never imports it."""

    def __post_init__(self) -> None:
        arrays = {name: np.asarray(value) for name, value in self.state.items()}
        object.__setattr__(self, "state", arrays)
        _check_consistent(self)

    def to_bytes(self) -> bytes:
        """The safetensors bytes; the embedded manifest has no version, sha256 or signature."""
        manifest = self.manifest.model_copy(
            update={
                "version": None,
                "artifact_sha256": None,
                "artifact_bytes": None,
                "signature": None,
            }
        )
        document = {
            "format": FORMAT,
            "manifest": manifest.model_dump(mode="json"),
            "encoder": self.encoder.to_json(),
            "network": self.config.to_dict(),
        }
        tensors = {name: np.ascontiguousarray(t) for name, t in self.state.items()}
        data: bytes = save_tensors(
            tensors, metadata={METADATA_KEY: json.dumps(document, sort_keys=True)}
        )
        return data

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str | None = None) -> Artifact:
        """Parse ``data``; ``ArtifactError`` when its sha256 differs or it is malformed."""
        if expected_sha256 is not None and sha256_hex(data) != expected_sha256.lower():
            raise ArtifactError(
                f"artifact sha256 {sha256_hex(data)} is not the expected {expected_sha256}"
            )
        document = _metadata_document(data)
        try:
            state = load_tensors(bytes(data))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise ArtifactError(f"artifact tensors do not parse: {exc}") from None
        try:
            return cls(
                manifest=ModelManifest.model_validate(document["manifest"]),
                encoder=TextEncoder.from_json(document["encoder"]),
                config=NetworkConfig.from_dict(document["network"]),
                state=state,
            )
        except (KeyError, TypeError, ValidationError, ModelError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"artifact metadata is malformed: {exc}") from None


def _metadata_document(data: bytes) -> dict[str, Any]:
    """The ``tagstream`` JSON from the safetensors header (8-byte little-endian length)."""
    if len(data) < 8:
        raise ArtifactError(f"artifact is {len(data)} bytes, too short for safetensors")
    size = int.from_bytes(data[:8], "little")
    if size > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ArtifactError(f"artifact header claims {size} bytes; the file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + size])
        document = json.loads(header["__metadata__"][METADATA_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"artifact header is not tagstream metadata: {exc!r}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"artifact format is not {FORMAT}")
    return document


def _check_consistent(artifact: Artifact) -> None:
    """Labels, encoder and weights must describe the same model."""
    manifest, config = artifact.manifest, artifact.config
    if manifest.encoder_digest != artifact.encoder.digest:
        raise ArtifactError("manifest encoder_digest does not match the encoder")
    if config.n_labels != len(manifest.labels):
        raise ArtifactError(
            f"network has {config.n_labels} outputs for {len(manifest.labels)} labels"
        )
    if config.vocab_size != artifact.encoder.vocab_size:
        raise ArtifactError(
            f"network vocabulary {config.vocab_size} is not the encoder's "
            f"{artifact.encoder.vocab_size}"
        )
    expected = parameter_shapes(config)
    actual = {name: tuple(t.shape) for name, t in artifact.state.items()}
    if expected != actual:
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        raise ArtifactError(
            f"weights do not fit the network (missing {missing}, unexpected "
            f"{extra}, or shapes differ)"
        )
    if any(not np.issubdtype(t.dtype, np.floating) for t in artifact.state.values()):
        raise ArtifactError("weights must be floating point")
