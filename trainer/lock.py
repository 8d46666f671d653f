"""One trainer trains at a time, across processes and machines: a Redis lock with fencing.

``acquire`` takes a fresh fencing token (``INCR`` of ``<ns>:trainer:fence``) and sets
``<ns>:trainer:lock`` to ``<owner>:<token>`` only if nobody holds it, with a TTL. A
background thread renews the TTL while the holder works; ``still_held`` (checked right before
publishing) and ``release`` compare the stored value atomically in Lua, so a trainer whose
lock expired can neither publish nor release the lock of its successor.

``still_held`` is advice; the guarantee is :meth:`TrainingLock.fence`, which the trainer hands
to ``Registry.publish`` and ``Registry.promote``: their Lua scripts refuse the write unless the
lock still holds this token and no higher token was used before, in the same atomic step as
the write, so a trainer that stalls between the check and the write is refused too.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from model.registry import Fence
from trainer.errors import LockLostError

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class TrainingLock:
    """A held lock: its fencing token, and a renewing thread until released."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: float) -> None:
        self._client = client
        self._key = f"{namespace}:trainer:lock"
        self._fence_key = f"{namespace}:trainer:fence"
        self._ttl_ms = int(ttl_s * 1000)
        self._value = ""
        self.token = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lost = threading.Event()

    def acquire(self) -> bool:
        """Take the lock if it is free; start renewing it. False when another trainer holds it."""
        token = int(self._client.incr(self._fence_key))
        value = f"{uuid.uuid4().hex}:{token}"
        if not self._client.set(self._key, value, nx=True, px=self._ttl_ms):
            return False
        self._value, self.token = value, token
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="lock-renew", daemon=True)
        self._renewer.start()
        return True

    def fence(self) -> Fence:
        """What the registry checks on a publish or promote made under this lock."""
        return Fence(self._key, self.token)

    def still_held(self) -> bool:
        """Whether this trainer still holds the lock (checked in Redis, not from memory)."""
        return not self._lost.is_set() and bool(
            self._client.eval(_RENEW, 1, self._key, self._value, self._ttl_ms)
        )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        self._client.eval(_RELEASE, 1, self._key, self._value)

    def _renew_loop(self) -> None:
        interval = self._ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                renewed = self._client.eval(_RENEW, 1, self._key, self._value, self._ttl_ms)
            except redis.RedisError:
                continue  # Redis away: the TTL decides; still_held() will tell before publishing
            if not renewed:
                self._lost.set()
                return


@contextmanager
def training_lock(
    client: redis.Redis, namespace: str, ttl_s: float = 60.0
) -> Iterator[TrainingLock]:
    """Hold the training lock for the block, or raise LockLostError if another trainer has it."""
    lock = TrainingLock(client, namespace, ttl_s)
    if not lock.acquire():
        raise LockLostError("another trainer holds the training lock")
    try:
        yield lock
    finally:
        lock.release()
