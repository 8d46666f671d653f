"""The local artifact cache: verified reads, atomic writes, eviction that spares alias models."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.cache import ArtifactCache
from model.registry import sha256_hex
from schemas.manifest import ModelManifest
from tests.registry.support import make_manifest


def stamped(data: bytes) -> ModelManifest:
    return make_manifest().model_copy(
        update={"version": 1, "artifact_sha256": sha256_hex(data), "artifact_bytes": len(data)}
    )


def test_the_cache_returns_what_it_stored_and_drops_a_corrupt_entry(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    data = b"weights" * 100
    path = cache.put(data, sha256_hex(data))
    assert cache.get(sha256_hex(data)) == data
    path.write_bytes(b"X" + data[1:])
    assert cache.get(sha256_hex(data)) is None
    assert not path.exists()


def test_the_cache_refuses_bytes_under_a_wrong_sha256(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ArtifactCache(tmp_path).put(b"abc", sha256_hex(b"abd"))


def test_eviction_drops_the_least_recently_used_but_never_an_alias_model(
    tmp_path: Path,
) -> None:
    cache = ArtifactCache(tmp_path, max_entries=2)
    blobs = [f"model {i}".encode() for i in range(4)]
    cache.put(blobs[0], sha256_hex(blobs[0]))
    cache.remember("ns", "production", stamped(blobs[0]))
    for blob in blobs[1:]:
        cache.put(blob, sha256_hex(blob))
    kept = {path.stem for path in cache.entries()}
    assert kept == {sha256_hex(blobs[0]), sha256_hex(blobs[3])}


def test_remembered_alias_manifests_are_recalled_per_namespace(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    manifest = stamped(b"x")
    cache.remember("ns:one", "production", manifest)
    assert cache.recall("ns:one", "production") == manifest
    assert cache.recall("ns:two", "production") is None
