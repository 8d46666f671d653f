"""Registry authenticity against the real Redis: with a signing key, a version loads only if
that key signed it, from Redis, from the disk cache, and from the cache while Redis is away."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from common.settings import RedisSettings
from model.errors import SignatureError
from model.loader import ModelLoader
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest
from tests.registry.support import RedisServer

pytestmark = pytest.mark.integration

KEY = "publisher-key-" + "a" * 50
OTHER_KEY = "someone-elses-key-" + "b" * 46


def keyed(
    settings: RegistrySettings, key: str | None, cache: Path | None = None
) -> RegistrySettings:
    """``settings`` with ``key`` as TAGSTREAM_REGISTRY_SIGNING_KEY (and another cache dir)."""
    update: dict[str, object] = {"signing_key": None if key is None else key}
    if cache is not None:
        update["cache_dir"] = cache
    return RegistrySettings.model_validate(settings.model_dump() | update)


def publish(
    redis_settings: RedisSettings, settings: RegistrySettings, manifest: ModelManifest
) -> tuple[int, bytes]:
    """Publish random bytes with ``settings`` (its key, if any) and promote them."""
    data = os.urandom(5000)
    with ModelLoader.from_settings(redis_settings, settings) as publisher:
        version = publisher.registry.publish(data, manifest)
        publisher.registry.promote(version)
    return version, data


def test_a_version_signed_with_the_key_loads_with_the_same_key(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    version, data = publish(redis_settings, keyed(registry_settings, KEY), manifest)
    worker = keyed(registry_settings, KEY, tmp_path / "worker-cache")
    with ModelLoader.from_settings(redis_settings, worker) as loader:
        model = loader.load()
    assert (model.version, model.data, model.source) == (version, data, "redis")
    assert model.manifest.signature is not None


def test_a_worker_with_another_key_refuses_the_version_and_caches_nothing(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    publish(redis_settings, keyed(registry_settings, KEY), manifest)
    worker = keyed(registry_settings, OTHER_KEY, tmp_path / "worker-cache")
    with (
        ModelLoader.from_settings(redis_settings, worker) as loader,
        pytest.raises(SignatureError, match="not made with TAGSTREAM_REGISTRY_SIGNING_KEY"),
    ):
        loader.load()
    assert loader.cache.entries() == []


def test_an_unsigned_version_is_refused_when_the_key_is_set(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    publish(redis_settings, keyed(registry_settings, None), manifest)
    worker = keyed(registry_settings, KEY, tmp_path / "worker-cache")
    with (
        ModelLoader.from_settings(redis_settings, worker) as loader,
        pytest.raises(SignatureError, match="unsigned"),
    ):
        loader.load()


def test_without_a_key_nothing_is_signed_and_a_signed_version_still_loads(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    unsigned, _ = publish(redis_settings, keyed(registry_settings, None), manifest)
    signed, data = publish(redis_settings, keyed(registry_settings, KEY), manifest)
    with ModelLoader.from_settings(redis_settings, registry_settings) as loader:
        assert loader.registry.manifest(unsigned).signature is None
        assert loader.load().data == data
    assert loader.registry.manifest(signed).signature is not None


def test_a_tampered_manifest_in_redis_is_refused(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Someone with write access to Redis lowers the thresholds; the signature gives it away."""
    version, _ = publish(redis_settings, keyed(registry_settings, KEY), manifest)
    worker = keyed(registry_settings, KEY, tmp_path / "worker-cache")
    with ModelLoader.from_settings(redis_settings, worker) as loader:
        stored = loader.registry.manifest(version)
        tampered = stored.model_copy(update={"thresholds": [0.01] * len(stored.labels)})
        redis_client.hset(loader.registry.keys.manifests, str(version), tampered.model_dump_json())
        with pytest.raises(SignatureError):
            loader.load()


def test_a_cached_artifact_passes_the_same_check_as_a_download(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    """A cache filled under one key serves nothing to a loader with another key."""
    publish(redis_settings, keyed(registry_settings, KEY), manifest)
    cache = tmp_path / "shared-cache"
    with ModelLoader.from_settings(redis_settings, keyed(registry_settings, KEY, cache)) as first:
        first.load()
    other = keyed(registry_settings, OTHER_KEY, cache)
    with ModelLoader.from_settings(redis_settings, other) as loader:
        assert len(loader.cache.entries()) == 1  # the bytes are there, hash and all
        with pytest.raises(SignatureError):
            loader.load()


def test_while_redis_is_down_the_remembered_manifest_must_carry_the_signature(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    tmp_path: Path,
) -> None:
    """Offline, the manifest comes from the cache's alias file: edited there, it is refused."""
    server = private_redis()
    redis_settings = RedisSettings(url=server.url, namespace="signed", socket_timeout_s=0.5)
    settings = keyed(registry_settings, KEY, tmp_path / "cache")
    version, data = publish(redis_settings, settings, manifest)
    with ModelLoader.from_settings(redis_settings, settings) as worker:
        worker.load()
    server.stop()
    with ModelLoader.from_settings(redis_settings, settings) as restarted:
        assert restarted.load().data == data  # signed and unchanged: served offline
        remembered = restarted.cache.recall("signed", "production")
        assert remembered is not None and remembered.version == version
        edited = remembered.model_copy(update={"labels": ["earn", "acq", "grain"]})
        restarted.cache.remember("signed", "production", edited)
        with pytest.raises(SignatureError):
            restarted.load()
