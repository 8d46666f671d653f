"""One trainer at a time: the Redis lock excludes and expires, and the registry fences off a
trainer whose lock expired while it worked."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from common.settings import RedisSettings
from model.errors import FencedError
from tests.registry.support import make_manifest
from tests.trainer_service.support import open_registry, stall
from trainer.errors import LockLostError
from trainer.lock import TrainingLock, training_lock

pytestmark = pytest.mark.integration


def test_a_second_trainer_cannot_take_a_held_lock(redis_client) -> None:
    with training_lock(redis_client, "ns", ttl_s=5) as first:
        with pytest.raises(LockLostError), training_lock(redis_client, "ns", ttl_s=5):
            pass
        assert first.still_held()


def test_the_holder_renews_the_lock_past_its_ttl(redis_client) -> None:
    with training_lock(redis_client, "ns", ttl_s=0.6) as lock:
        time.sleep(1.5)  # several TTLs: only renewal can keep it
        assert lock.still_held()


def test_an_expired_holder_cannot_release_its_successor(redis_client) -> None:
    stale = TrainingLock(redis_client, "ns", ttl_s=1.5)
    assert stale.acquire()
    stall(stale, redis_client, "ns:trainer:lock")
    successor = TrainingLock(redis_client, "ns", ttl_s=5)
    assert successor.acquire()
    assert not stale.still_held()
    stale.release()
    assert successor.still_held()
    successor.release()


def test_a_trainer_stalled_past_its_ttl_can_neither_publish_nor_promote(
    redis_client: redis.Redis, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    """The registry itself refuses the stale token; the trainer's own check is not needed."""
    namespace = redis_settings.namespace
    manifest = make_manifest(micro_f1=0.8)
    with open_registry(tmp_path, redis_settings) as registry:
        stale = TrainingLock(redis_client, namespace, ttl_s=1.5)
        assert stale.acquire()
        stall(stale, redis_client, f"{namespace}:trainer:lock")
        with training_lock(redis_client, namespace, ttl_s=5) as successor:
            with pytest.raises(FencedError, match="not held with token"):
                registry.publish(b"stale model", manifest, fence=stale.fence())
            assert registry.versions() == []
            version = registry.publish(b"fresh model", manifest, fence=successor.fence())
            with pytest.raises(FencedError):
                registry.promote(version, fence=stale.fence())
            assert registry.aliases() == {}
            registry.promote(version, fence=successor.fence())
        assert registry.aliases() == {"production": version}
        with pytest.raises(FencedError):  # nobody holds the lock now: still refused
            registry.promote(version, "canary", fence=stale.fence())
        stale.release()


def test_manual_publish_and_promote_carry_no_fence_and_are_not_refused(
    redis_client: redis.Redis, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    """An operator at the CLI holds no lock; a trainer holding it meanwhile does not block them."""
    with (
        open_registry(tmp_path, redis_settings) as registry,
        training_lock(redis_client, redis_settings.namespace, ttl_s=5),
    ):
        version = registry.publish(b"by hand", make_manifest(micro_f1=0.5))
        assert registry.promote(version) is None
        assert registry.aliases() == {"production": version}
