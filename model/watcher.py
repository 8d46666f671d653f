"""Notices alias changes (promote, rollback) and tells the caller, from a background thread.

One loop, two ways to wake it::

    pub/sub on:   listen on the alias-changes channel (in slices of WAKE_S)
    pub/sub off:  sleep (in slices of WAKE_S)
    on a message, or poll_interval_s after the last reading:
                  re-read the aliases (and their change serials) and report every alias
                  whose version differs, or that was re-set to the version it held

The aliases hash is the truth and a message only a hint, so a message lost across a
reconnect costs at most one poll interval. Given ``known`` (the versions the caller already
acts on, e.g. the model a worker loaded), the first reading happens at once and is compared
with it, so a change that landed before the watcher started is reported too. An alias whose
value is not a version number is logged (once per value) and keeps its last known version;
an unexpected error in a reading is logged and the next tick reads again. Redis errors are
retried on the next tick and logged once per outage (a warning when Redis stops answering,
``alias_watcher_recovered`` when it answers again); the watcher keeps the last versions it
saw. The thread looks at its stop flag every ``WAKE_S``, so ``stop()`` returns promptly
whatever the poll interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import redis
from redis.client import PubSub

from common.logging import get_logger
from model.errors import RegistryError
from model.registry import AliasState, Registry

log = get_logger("model.watcher")

WAKE_S = 0.1
"""Longest the thread waits before looking at the stop flag again."""
RECONNECT_S = 0.5
"""Pause between attempts to re-establish a broken pub/sub connection."""


@dataclass(frozen=True)
class AliasChange:
    """``alias`` now points at ``version`` (None: unset); it pointed at ``previous`` before."""

    alias: str
    version: int | None
    previous: int | None


def diff_aliases(
    before: Mapping[str, int],
    after: Mapping[str, int],
    serials_before: Mapping[str, int] | None = None,
    serials_after: Mapping[str, int] | None = None,
) -> list[AliasChange]:
    """One change per alias whose version differs between the two readings, or whose change
    serial moved while the version stayed (a re-set: ``version == previous``)."""
    names = sorted(set(before) | set(after))
    return [
        AliasChange(name, after.get(name), before.get(name))
        for name in names
        if before.get(name) != after.get(name)
        or (
            serials_before is not None
            and serials_after is not None
            and serials_before.get(name) != serials_after.get(name)
        )
    ]


class AliasWatcher:
    """Calls ``on_change`` for every alias change it sees, from its own thread."""

    def __init__(
        self,
        registry: Registry,
        on_change: Callable[[AliasChange], None],
        *,
        pubsub: bool | None = None,
        poll_interval_s: float | None = None,
        known: Mapping[str, int] | None = None,
    ):
        self._registry = registry
        self._on_change = on_change
        self._use_pubsub = registry.settings.pubsub if pubsub is None else pubsub
        self._interval = poll_interval_s or registry.settings.poll_interval_s
        self._known: dict[str, int] = dict(known) if known is not None else {}
        self._serials: dict[str, int] | None = None
        self._malformed: dict[str, str] = {}
        self._check_error: str | None = None
        self._baseline_given = known is not None
        self._stop = threading.Event()
        self._pubsub: PubSub | None = None
        self._pubsub_broken = False
        self._unreachable = False
        self._thread = threading.Thread(target=self._run, name="alias-watcher", daemon=True)

    def start(self) -> Self:
        """Take the current aliases as the baseline (unless ``known`` was given: then the
        thread compares them with it at once), subscribe, and start the thread."""
        if not self._baseline_given:
            state = self._read()
            if state is not None:
                self._known, self._serials = self._versions(state), dict(state.serials)
        if self._use_pubsub:
            self._subscribe()
        self._thread.start()
        log.info("alias watcher started", pubsub=self._use_pubsub, aliases=self._known)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to finish, wait for it, and close the subscription."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        log.info("alias watcher stopped")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _subscribe(self) -> None:
        self._pubsub = self._registry.client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
        self._ensure_subscribed()

    def _ensure_subscribed(self) -> None:
        """(Re)subscribe if the channel is not subscribed, e.g. Redis was down at start."""
        if self._pubsub is None or self._pubsub.subscribed:
            return
        try:
            self._pubsub.subscribe(self._registry.keys.channel)
            self._pubsub.get_message(timeout=1.0)  # the server's confirmation
        except (redis.RedisError, OSError) as exc:
            self._failed("alias watcher subscribe failed", exc)

    def _run(self) -> None:
        next_poll = time.monotonic() + (0.0 if self._baseline_given else self._interval)
        while not self._stop.is_set():
            hinted = self._wait(min(WAKE_S, max(0.0, next_poll - time.monotonic())))
            if self._stop.is_set():
                break
            if hinted or time.monotonic() >= next_poll:
                self._checked()
                next_poll = time.monotonic() + self._interval

    def _wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s``; True if a pub/sub message hinted at a change."""
        if self._pubsub is None or not self._pubsub.subscribed:
            self._stop.wait(timeout_s)
            return False
        try:
            message = self._pubsub.get_message(timeout=timeout_s)
            hinted = self._pubsub_broken  # messages may have been lost while it was down
            while message is not None:  # drain what else arrived; one re-read covers all
                hinted = hinted or message.get("type") == "message"
                message = self._pubsub.get_message(timeout=0)
        except (redis.RedisError, OSError, ValueError) as exc:
            if not self._pubsub_broken:
                log.warning("alias watcher pubsub error", error=str(exc))
            self._pubsub_broken = True
            self._stop.wait(min(self._interval, RECONNECT_S))
            return False
        self._pubsub_broken = False
        return hinted

    def _checked(self) -> None:
        """:meth:`_check`, where an unexpected error is logged (once until a reading works
        again) and the next tick tries again: whatever Redis holds, the watcher keeps on."""
        try:
            self._check()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._check_error:
                log.exception("alias watcher check failed", error=error)
            self._check_error = error
            return
        self._check_error = None

    def _check(self) -> None:
        self._ensure_subscribed()
        state = self._read()
        if state is None:
            return
        current = self._versions(state)
        changes = diff_aliases(self._known, current, self._serials, state.serials)
        self._known, self._serials = current, dict(state.serials)
        for change in changes:
            self._notify(change)

    def _read(self) -> AliasState | None:
        try:
            state = self._registry.alias_state()
        except RegistryError as exc:
            self._failed("alias watcher read failed", exc)
            return None
        if self._unreachable:
            log.info("alias watcher recovered", aliases=state.versions)
        self._unreachable = False
        return state

    def _versions(self, state: AliasState) -> dict[str, int]:
        """The versions read, where a malformed alias keeps the version known before it."""
        if state.malformed != self._malformed:
            for alias, value in state.malformed.items():
                if self._malformed.get(alias) != value:
                    log.warning(
                        "alias value malformed; keeping the last known version",
                        alias=alias,
                        value=value[:100],
                        version=self._known.get(alias),
                    )
            self._malformed = dict(state.malformed)
        kept = {alias: self._known[alias] for alias in state.malformed if alias in self._known}
        return state.versions | kept

    def _failed(self, event: str, exc: Exception) -> None:
        """Warn on the first failure of an outage only: it retries every poll interval."""
        if not self._unreachable:
            log.warning(event, error=str(exc), retrying_every_s=self._interval)
        self._unreachable = True

    def _notify(self, change: AliasChange) -> None:
        log.info(
            "alias changed", alias=change.alias, version=change.version, previous=change.previous
        )
        try:
            self._on_change(change)
        except Exception:
            log.exception("alias watcher callback failed", alias=change.alias)
