"""Hot swap: load and warm a new model version off the loop, swap it in between batches.

:class:`ModelSlot` holds the model serving now; reading it is one attribute read, so the
assembler takes it when it opens a batch and the whole batch is encoded and scored by that
one model. :class:`Swapper` runs a background thread that loads the version it is told
about (:meth:`Swapper.want`), warms it up and only then puts it in the slot. While a version
fails, the old model keeps serving::

    final failure       integrity or format (a non-retriable TagstreamError: sha256, a
                        malformed artifact, an unknown version): refused at once
    anything else       a Redis timeout, out of memory in warm-up...: tried again after
                        RetryPolicy.initial_s, doubling up to max_s, at most attempts times,
                        each retry logged and counted; then refused

A refusal is logged and counted and lasts only until the next :meth:`want`: every promote
(the alias moving away and back, or re-set to the same version) is a new try. How long the
worker has served a version other than the alias's is :meth:`Swapper.behind_s` (a gauge, and
one warning once it passes ``behind_after_s``).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import TagstreamError
from common.logging import get_logger
from model.errors import ArtifactError
from worker.inference import Model
from worker.metrics import Metrics

log = get_logger("worker.swap")


class ModelSlot:
    """The model serving now (None until the first one is installed)."""

    def __init__(self, metrics: Metrics) -> None:
        self._model: Model | None = None
        self._metrics = metrics
        self.loaded = threading.Event()

    def current(self) -> Model | None:
        return self._model

    @property
    def version(self) -> int | None:
        model = self._model
        return model.version if model is not None else None

    def install(self, model: Model) -> None:
        previous = self.version
        self._model = model
        self._metrics.model_version.set(model.version)
        self.loaded.set()
        if previous is not None:
            self._metrics.model_swaps.inc()
        log.info("model installed", model_version=model.version, previous_version=previous)


@dataclass(frozen=True)
class RetryPolicy:
    """How a version that fails for a transient reason is tried again."""

    attempts: int = 5
    initial_s: float = 1.0
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError(f"retry policy needs attempts >= 1 and 0 < initial <= max: {self}")

    def wait_s(self, failures: int) -> float:
        """The pause after the ``failures``-th failure in a row."""
        return float(min(self.initial_s * 2 ** (failures - 1), self.max_s))


def is_final(exc: BaseException) -> bool:
    """Whether trying the same version again cannot help: integrity or format failures."""
    return isinstance(exc, TagstreamError) and not exc.retriable


class Swapper:
    """Loads wanted versions in the background and installs the ones that work."""

    def __init__(
        self,
        slot: ModelSlot,
        load: Callable[[int], Model],
        metrics: Metrics,
        *,
        retry: RetryPolicy | None = None,
        behind_after_s: float = 300.0,
    ) -> None:
        self._slot = slot
        self._load = load
        self._metrics = metrics
        self._retry = retry or RetryPolicy()
        self._behind_after_s = behind_after_s
        self._wanted: int | None = None
        self._refused: dict[int, str] = {}
        self._failures: dict[int, int] = {}
        self._retry_at = 0.0
        self._behind_since: float | None = None
        self._behind_logged = False
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        metrics.model_behind_alias_seconds.set_function(lambda: self.behind_s() or 0.0)

    def start(self) -> None:
        """Start the loader thread with a copy of the caller's log context."""
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="model-swap", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def want(self, version: int) -> None:
        """The alias now points at ``version`` (a promote, a rollback, or a re-set): serve it
        once it loads and warms up. A refusal or failures of ``version`` are forgotten."""
        with self._wake:
            self._wanted = version
            self._refused.pop(version, None)
            self._failures.pop(version, None)
            self._retry_at = 0.0
            self._track_behind()
            self._wake.notify_all()

    @property
    def wanted(self) -> int | None:
        """The version the alias pointed at when last told (None: never told)."""
        return self._wanted

    def refused(self) -> set[int]:
        return set(self._refused)

    def refusal(self, version: int) -> str | None:
        """Why ``version`` is refused now, if it is."""
        return self._refused.get(version)

    def behind_s(self) -> float | None:
        """Seconds the slot has served another version than the alias's (None: it does not)."""
        since = self._behind_since
        return None if since is None else time.monotonic() - since

    def _track_behind(self) -> None:
        """Start or end the behind-the-alias clock (called with the lock held)."""
        behind = self._wanted is not None and self._wanted != self._slot.version
        if not behind:
            self._behind_since, self._behind_logged = None, False
        elif self._behind_since is None:
            self._behind_since = time.monotonic()

    def _next(self) -> int | None:
        with self._wake:
            while not self._stopped:
                now = time.monotonic()
                self._warn_if_behind(now)
                wanted = self._wanted
                if self._needs(wanted) and now >= self._retry_at:
                    return wanted
                self._wake.wait(self._sleep_s(now))
            return None

    def _sleep_s(self, now: float) -> float | None:
        """How long nothing is due: the next retry or the behind warning, whichever first."""
        due = []
        if self._needs(self._wanted):
            due.append(self._retry_at)
        if self._behind_since is not None and not self._behind_logged:
            due.append(self._behind_since + self._behind_after_s)
        return max(0.0, min(due) - now) if due else None

    def _warn_if_behind(self, now: float) -> None:
        since = self._behind_since
        if since is None or self._behind_logged or now - since < self._behind_after_s:
            return
        self._behind_logged = True
        log.warning(
            "model behind alias",
            model_version=self._slot.version,
            alias_version=self._wanted,
            behind_s=round(now - since, 1),
            refused=self._refused.get(self._wanted) if self._wanted is not None else None,
        )

    def _needs(self, version: int | None) -> bool:
        return (
            version is not None and version != self._slot.version and version not in self._refused
        )

    def _run(self) -> None:
        while (version := self._next()) is not None:
            self.swap_to(version)

    def swap_to(self, version: int) -> bool:
        """Try to load, warm and install ``version`` now; False if it failed (a final failure,
        or the last allowed attempt, refuses it; an earlier transient one schedules a retry)."""
        try:
            model = self._load(version)
            model.warm_up()
            if model.version != version:
                raise ArtifactError(f"the artifact says version {model.version}, not {version}")
        except Exception as exc:
            self._failed(version, exc)
            return False
        with self._wake:
            self._slot.install(model)
            self._failures.pop(version, None)
            self._track_behind()
        return True

    def _failed(self, version: int, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        with self._wake:
            failures = self._failures[version] = self._failures.get(version, 0) + 1
            if is_final(exc) or failures >= self._retry.attempts:
                self._refuse(version, error, failures)
                return
            wait_s = self._retry.wait_s(failures)
            self._retry_at = time.monotonic() + wait_s
        self._metrics.model_load_retries.inc()
        log.warning(
            "model version failed to load; retrying",
            failed_version=version,
            model_version=self._slot.version,
            attempt=failures,
            attempts=self._retry.attempts,
            retry_in_s=round(wait_s, 2),
            error=error,
        )

    def _refuse(self, version: int, error: str, failures: int) -> None:
        """Refuse ``version`` until the next promote (called with the lock held)."""
        self._refused[version] = error
        self._metrics.model_refusals.inc()
        log.error(
            "model version refused, the current one keeps serving",
            refused_version=version,
            model_version=self._slot.version,
            attempts=failures,
            error=error,
            retried_on="the next promote of this version",
        )
