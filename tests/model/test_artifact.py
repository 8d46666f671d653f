"""The artifact: one safetensors file, verified by sha256, never unpickled."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch

from model.artifact import Artifact, sha256_hex
from model.errors import ArtifactError
from model.network import build_network
from model.toy import toy_artifact


@pytest.fixture(scope="module")
def artifact() -> Artifact:
    return toy_artifact()


def test_round_trip_keeps_manifest_encoder_config_and_weights(artifact: Artifact) -> None:
    data = artifact.to_bytes()
    loaded = Artifact.from_bytes(data, expected_sha256=sha256_hex(data))
    assert loaded.manifest == artifact.manifest
    assert loaded.encoder.digest == artifact.encoder.digest
    assert loaded.config == artifact.config
    assert loaded.state.keys() == artifact.state.keys()
    assert all(np.array_equal(loaded.state[k], artifact.state[k]) for k in artifact.state)


def test_same_artifact_gives_the_same_bytes(artifact: Artifact) -> None:
    assert artifact.to_bytes() == toy_artifact().to_bytes()
    assert toy_artifact(seed=1).to_bytes() != artifact.to_bytes()


def test_the_bytes_are_a_safetensors_file_with_json_metadata(artifact: Artifact) -> None:
    data = artifact.to_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    document = json.loads(header["__metadata__"]["tagstream"])
    assert document["manifest"]["labels"] == ["earn", "acq", "crude"]
    assert document["manifest"]["version"] is None
    assert document["manifest"]["artifact_sha256"] is None


def test_embedded_manifest_drops_registry_fields(artifact: Artifact) -> None:
    published = artifact.manifest.model_copy(update={"version": 3, "artifact_sha256": "a" * 64})
    data = Artifact(published, artifact.encoder, artifact.config, artifact.state).to_bytes()
    assert Artifact.from_bytes(data).manifest.version is None


def test_sha256_mismatch_is_rejected_before_parsing(artifact: Artifact) -> None:
    with pytest.raises(ArtifactError, match="sha256"):
        Artifact.from_bytes(b"not even safetensors", expected_sha256=sha256_hex(b"other"))
    assert not ArtifactError.retriable


def test_a_flipped_byte_fails_the_sha256(artifact: Artifact) -> None:
    data = bytearray(artifact.to_bytes())
    expected = sha256_hex(bytes(data))
    data[-1] ^= 0xFF
    with pytest.raises(ArtifactError):
        Artifact.from_bytes(bytes(data), expected_sha256=expected)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 4,
        b"\xff" * 8 + b"{}",
        (2).to_bytes(8, "little") + b"{}",
        (8).to_bytes(8, "little") + b'{"a": 1}' + b" " * 8,
    ],
)
def test_malformed_bytes_are_an_artifact_error(data: bytes) -> None:
    with pytest.raises(ArtifactError):
        Artifact.from_bytes(data)


def test_truncated_artifact_is_an_artifact_error(artifact: Artifact) -> None:
    with pytest.raises(ArtifactError):
        Artifact.from_bytes(artifact.to_bytes()[:-10])


def test_inconsistent_parts_are_rejected(artifact: Artifact) -> None:
    other = toy_artifact(labels=("a", "b"))
    with pytest.raises(ArtifactError):
        Artifact(artifact.manifest, other.encoder, artifact.config, artifact.state)
    with pytest.raises(ArtifactError):
        Artifact(artifact.manifest, artifact.encoder, artifact.config, other.state)
    missing = dict(artifact.state)
    missing.pop("head.bias")
    with pytest.raises(ArtifactError):
        Artifact(artifact.manifest, artifact.encoder, artifact.config, missing)


def test_a_bag_of_words_network_round_trips_and_needs_its_tensors(artifact: Artifact) -> None:
    config = dataclasses.replace(artifact.config, bag_of_words=True)
    state = dict(build_network(config, seed=3).state_dict())
    wide = Artifact(artifact.manifest, artifact.encoder, config, state)
    loaded = Artifact.from_bytes(wide.to_bytes())
    assert loaded.config.bag_of_words
    assert all(np.array_equal(loaded.state[k], state[k]) for k in ("wide.weight", "idf"))
    with pytest.raises(ArtifactError, match=r"missing \['idf', 'wide.weight'\]"):
        Artifact(artifact.manifest, artifact.encoder, config, artifact.state)
    with pytest.raises(ArtifactError, match=r"unexpected \['idf', 'wide.weight'\]"):
        Artifact(artifact.manifest, artifact.encoder, artifact.config, state)


def test_loading_never_calls_pickle(artifact: Artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert Artifact.from_bytes(artifact.to_bytes()).manifest == artifact.manifest
