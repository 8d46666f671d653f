"""Aliases: promote, rollback to the previous holder, and retention that spares them."""

from __future__ import annotations

import os

import pytest
import redis

from common.settings import RedisSettings
from model.errors import AliasMovedError, ModelError
from model.registry import Registry
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest

pytestmark = pytest.mark.integration


def publish_many(registry: Registry, manifest: ModelManifest, count: int) -> list[int]:
    return [registry.publish(os.urandom(3000), manifest) for _ in range(count)]


def test_rollback_restores_the_previous_model(registry: Registry, manifest: ModelManifest) -> None:
    old, new = publish_many(registry, manifest, 2)
    old_bytes = registry.fetch(old)
    assert registry.promote(old) is None
    assert registry.promote(new) == old
    assert registry.rollback() == old
    assert registry.resolve("production") == old
    assert registry.fetch(registry.resolve("production")) == old_bytes


def test_rollback_walks_back_through_history_and_then_refuses(
    registry: Registry, manifest: ModelManifest
) -> None:
    first, second, third = publish_many(registry, manifest, 3)
    for version in (first, second, third):
        registry.promote(version)
    assert registry.history("production") == [second, first]
    assert registry.rollback() == second
    assert registry.rollback() == first
    with pytest.raises(ModelError, match="no earlier holder") as caught:
        registry.rollback()
    assert caught.value.retriable is False
    assert registry.resolve("production") == first


def test_a_rollback_that_expects_a_holder_leaves_a_moved_alias_alone(
    registry: Registry, manifest: ModelManifest
) -> None:
    first, second, third = publish_many(registry, manifest, 3)
    registry.promote(first)
    registry.promote(second)  # judged bad by someone...
    registry.promote(third)  # ...while an operator promoted a fix
    with pytest.raises(AliasMovedError, match="not the expected 2"):
        registry.rollback(expect=second)
    assert registry.resolve("production") == third
    assert registry.history("production") == [second, first]  # nothing popped
    assert registry.rollback(expect=third) == second


def test_promoting_the_current_holder_adds_no_history(
    registry: Registry, manifest: ModelManifest
) -> None:
    (version,) = publish_many(registry, manifest, 1)
    registry.promote(version)
    assert registry.promote(version) == version
    assert registry.history("production") == []


def test_promoting_an_unknown_version_is_refused_and_changes_nothing(
    registry: Registry, manifest: ModelManifest
) -> None:
    (version,) = publish_many(registry, manifest, 1)
    registry.promote(version)
    with pytest.raises(ModelError, match="not published"):
        registry.promote(version + 100)
    assert registry.aliases() == {"production": version}


def test_production_and_canary_move_independently(
    registry: Registry, manifest: ModelManifest
) -> None:
    stable, candidate = publish_many(registry, manifest, 2)
    registry.promote(stable, "production")
    registry.promote(candidate, "canary")
    assert registry.aliases() == {"production": stable, "canary": candidate}
    registry.promote(stable, "canary")
    assert registry.rollback("canary") == candidate
    assert registry.resolve("production") == stable


def test_an_unknown_alias_is_refused(registry: Registry) -> None:
    with pytest.raises(ModelError, match="unknown alias"):
        registry.promote(1, "staging")
    with pytest.raises(ModelError, match="does not point"):
        registry.resolve("canary")


def test_retention_keeps_the_newest_and_never_deletes_an_aliased_version(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
    redis_client: redis.Redis,
) -> None:
    settings = registry_settings.model_copy(update={"retention": 2})
    with Registry.from_settings(redis_settings, settings) as registry:
        production = registry.publish(b"production", manifest)
        registry.promote(production, "production")
        publish_many(registry, manifest, 2)
        canary = registry.publish(b"canary", manifest)
        registry.promote(canary, "canary")
        newest = publish_many(registry, manifest, 4)
        assert registry.versions() == sorted({production, canary, *newest[-2:]})
        assert registry.fetch(production) and registry.fetch(canary)
        for deleted in {*range(1, newest[-1] + 1)} - set(registry.versions()):
            assert not redis_client.exists(registry.keys.artifact(deleted))


def test_retention_keeps_the_version_a_rollback_would_restore(
    redis_settings: RedisSettings,
    registry_settings: RegistrySettings,
    manifest: ModelManifest,
) -> None:
    settings = registry_settings.model_copy(update={"retention": 1})
    with Registry.from_settings(redis_settings, settings) as registry:
        old = registry.publish(b"old", manifest)
        registry.promote(old)
        new = registry.publish(b"new", manifest)
        registry.promote(new)
        publish_many(registry, manifest, 3)
        assert old in registry.versions()
        assert registry.rollback() == old
        assert registry.fetch(old)


@pytest.mark.integration
def test_a_non_integer_alias_value_is_left_out_and_resolving_it_says_why(
    registry: Registry, manifest: ModelManifest
) -> None:
    version = registry.publish(b"x" * 10, manifest)
    registry.promote(version, "canary")
    registry.client.hset(registry.keys.aliases, "production", "7b")
    assert registry.aliases() == {"canary": version}
    with pytest.raises(ModelError, match="holds '7b', not a version"):
        registry.resolve("production")
