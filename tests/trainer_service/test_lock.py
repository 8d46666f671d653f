"""One trainer at a time: the Redis lock excludes, fences and expires."""

from __future__ import annotations

import time

import pytest

from trainer.errors import LockLostError
from trainer.lock import TrainingLock, training_lock

pytestmark = pytest.mark.integration


def test_a_second_trainer_cannot_take_a_held_lock(redis_client) -> None:
    with training_lock(redis_client, "ns", ttl_s=5) as first:
        with pytest.raises(LockLostError), training_lock(redis_client, "ns", ttl_s=5):
            pass
        assert first.still_held()
    with training_lock(redis_client, "ns", ttl_s=5) as later:
        assert later.token > first.token


def test_the_holder_renews_the_lock_past_its_ttl(redis_client) -> None:
    with training_lock(redis_client, "ns", ttl_s=0.6) as lock:
        time.sleep(1.5)  # several TTLs: only renewal can keep it
        assert lock.still_held()


def test_an_expired_holder_cannot_release_its_successor(redis_client) -> None:
    stale = TrainingLock(redis_client, "ns", ttl_s=5)
    assert stale.acquire()
    stale._stop.set()  # simulate a stalled process: no more renewals
    redis_client.delete("ns:trainer:lock")  # its TTL ran out
    successor = TrainingLock(redis_client, "ns", ttl_s=5)
    assert successor.acquire()
    assert not stale.still_held()
    stale.release()
    assert successor.still_held()
    successor.release()
