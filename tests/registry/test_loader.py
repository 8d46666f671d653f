"""The loader: warm workers download nothing, and a restarted worker serves without Redis."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import redis

from common.settings import RedisSettings
from model.cache import ArtifactCache
from model.errors import RegistryError
from model.loader import ModelLoader
from model.registry import Registry
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest
from tests.registry.support import RedisServer

pytestmark = pytest.mark.integration


def test_a_cold_loader_downloads_and_a_warm_one_reads_only_its_cache(
    registry: Registry,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    redis_client: redis.Redis,
) -> None:
    data = os.urandom(5000)
    version = registry.publish(data, manifest)
    registry.promote(version)
    cache = ArtifactCache(registry_settings.cache_dir)
    cold = ModelLoader(registry, cache).load()
    assert (cold.version, cold.data, cold.source) == (version, data, "redis")
    redis_client.delete(registry.keys.artifact(version))  # a download would now fail
    warm = ModelLoader(registry, cache).load()
    assert (warm.version, warm.data, warm.source) == (version, data, "cache")


def test_a_promote_makes_the_next_load_return_the_new_model(
    registry: Registry, registry_settings: RegistrySettings, manifest: ModelManifest
) -> None:
    loader = ModelLoader(registry, ArtifactCache(registry_settings.cache_dir))
    first = registry.publish(b"first model", manifest)
    registry.promote(first)
    assert loader.load().data == b"first model"
    second = registry.publish(b"second model", manifest)
    registry.promote(second, "canary")
    assert loader.load("canary").version == second
    assert loader.load("production").version == first


def test_a_restarted_worker_serves_its_last_model_while_redis_is_down(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
) -> None:
    server = private_redis()
    settings = RedisSettings(url=server.url, namespace="offline", socket_timeout_s=0.5)
    data = os.urandom(20_000)
    with ModelLoader.from_settings(settings, registry_settings) as before:
        version = before.registry.publish(data, manifest)
        before.registry.promote(version)
        assert before.load().source == "redis"
    server.stop()
    with ModelLoader.from_settings(settings, registry_settings) as restarted:
        model = restarted.load()
    assert (model.version, model.data, model.source) == (version, data, "cache")


def test_a_worker_that_swapped_by_version_restarts_on_the_new_model_while_redis_is_down(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
) -> None:
    server = private_redis()
    settings = RedisSettings(url=server.url, namespace="swapped", socket_timeout_s=0.5)
    with ModelLoader.from_settings(settings, registry_settings) as worker:
        first = worker.registry.publish(b"first", manifest)
        worker.registry.promote(first)
        worker.load()
        second = worker.registry.publish(b"second", manifest)
        worker.registry.promote(second)
        worker.load_version(second)  # what a worker does when the watcher reports the change
    server.stop()
    with ModelLoader.from_settings(settings, registry_settings) as restarted:
        model = restarted.load()
    assert (model.version, model.data, model.source) == (second, b"second", "cache")


def test_without_redis_or_a_cached_model_loading_fails_as_retriable(
    private_redis: Callable[..., RedisServer],
    registry_settings: RegistrySettings,
) -> None:
    server = private_redis()
    server.stop()
    settings = RedisSettings(url=server.url, namespace="nothing", socket_timeout_s=0.5)
    with (
        ModelLoader.from_settings(settings, registry_settings) as loader,
        pytest.raises(RegistryError, match="no cached model") as caught,
    ):
        loader.load()
    assert caught.value.retriable is True
