"""Integrity: tampered, truncated or malformed registry entries are refused before parsing."""

from __future__ import annotations

import os
import re

import pytest
import redis

from model.artifact import Artifact
from model.cache import ArtifactCache
from model.errors import ArtifactError
from model.loader import ModelLoader
from model.registry import Registry, sha256_hex
from model.settings import RegistrySettings
from model.toy import toy_artifact
from schemas.manifest import ModelManifest

pytestmark = pytest.mark.integration


def flip_first_byte(client: redis.Redis, key: str, field: str = "0") -> None:
    chunk = client.hget(key, field)
    assert chunk is not None
    client.hset(key, field, bytes([chunk[0] ^ 0xFF]) + chunk[1:])


def test_a_toy_model_survives_publish_promote_load_and_parses(
    registry: Registry, registry_settings: RegistrySettings
) -> None:
    artifact = toy_artifact()
    data = artifact.to_bytes()
    version = registry.publish(data, artifact.manifest)
    registry.promote(version)
    loaded = ModelLoader(registry, ArtifactCache(registry_settings.cache_dir)).load()
    parsed = Artifact.from_bytes(loaded.data, loaded.manifest.artifact_sha256)
    assert loaded.manifest.artifact_sha256 == sha256_hex(data)
    assert parsed.manifest.labels == artifact.manifest.labels
    assert parsed.state.keys() == artifact.state.keys()


def test_a_flipped_byte_is_refused_with_both_digests_named(
    registry: Registry, manifest: ModelManifest, redis_client: redis.Redis
) -> None:
    version = registry.publish(os.urandom(3000), manifest)
    flip_first_byte(redis_client, registry.keys.artifact(version), "1")
    with pytest.raises(ArtifactError, match=r"sha256 [0-9a-f]{64} does not match") as caught:
        registry.fetch(version)
    assert manifest_sha(registry, version) in str(caught.value)
    assert caught.value.retriable is False


def manifest_sha(registry: Registry, version: int) -> str:
    sha = registry.manifest(version).artifact_sha256
    assert sha is not None and re.fullmatch(r"[0-9a-f]{64}", sha)
    return sha


def test_a_tampered_model_is_neither_served_nor_cached_and_the_current_one_stays(
    registry: Registry,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    redis_client: redis.Redis,
) -> None:
    cache = ArtifactCache(registry_settings.cache_dir)
    loader = ModelLoader(registry, cache)
    good = registry.publish(b"good model", manifest)
    registry.promote(good)
    serving = loader.load()
    bad = registry.publish(os.urandom(3000), manifest)
    flip_first_byte(redis_client, registry.keys.artifact(bad))
    registry.promote(bad)
    with pytest.raises(ArtifactError, match="refusing"):
        loader.load()
    assert serving.data == b"good model"
    assert [path.stem for path in cache.entries()] == [sha256_hex(b"good model")]
    assert cache.recall(registry.keys.namespace, "production") == serving.manifest


def test_a_missing_chunk_is_refused(
    registry: Registry, manifest: ModelManifest, redis_client: redis.Redis
) -> None:
    version = registry.publish(os.urandom(3000), manifest)
    redis_client.hdel(registry.keys.artifact(version), "1")
    with pytest.raises(ArtifactError, match=r"missing|bytes"):
        registry.fetch(version)


def test_a_truncated_chunk_is_refused_by_size(
    registry: Registry, manifest: ModelManifest, redis_client: redis.Redis
) -> None:
    version = registry.publish(os.urandom(3000), manifest)
    key = registry.keys.artifact(version)
    redis_client.hset(key, "2", (redis_client.hget(key, "2") or b"")[:-1])
    with pytest.raises(ArtifactError, match="2999 bytes, manifest says 3000"):
        registry.fetch(version)


def test_a_malformed_manifest_is_refused(
    registry: Registry, manifest: ModelManifest, redis_client: redis.Redis
) -> None:
    version = registry.publish(b"model", manifest)
    redis_client.hset(registry.keys.manifests, str(version), b'{"schema_version": 1}')
    with pytest.raises(ArtifactError, match="manifest is malformed"):
        registry.manifest(version)


def test_a_corrupt_cache_entry_is_replaced_by_a_fresh_download(
    registry: Registry, registry_settings: RegistrySettings, manifest: ModelManifest
) -> None:
    cache = ArtifactCache(registry_settings.cache_dir)
    version = registry.publish(b"weights" * 500, manifest)
    registry.promote(version)
    ModelLoader(registry, cache).load()
    (entry,) = cache.entries()
    entry.write_bytes(b"garbage")
    again = ModelLoader(registry, cache).load()
    assert (again.source, again.data) == ("redis", b"weights" * 500)
    assert entry.read_bytes() == b"weights" * 500
