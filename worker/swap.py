"""Hot swap: load and warm a new model version off the loop, swap it in between batches.

:class:`ModelSlot` holds the model serving now; reading it is one attribute read, so the
assembler takes it when it opens a batch and the whole batch is encoded and scored by that
one model. :class:`Swapper` runs a background thread that loads the version it is told
about (:meth:`Swapper.want`), warms it up and only then puts it in the slot. A version that
fails to load, verify or warm up is refused: the old model keeps serving, the refusal is
logged and counted, and that version is not tried again.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

from common.logging import get_logger
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


class Swapper:
    """Loads wanted versions in the background and installs the ones that work."""

    def __init__(self, slot: ModelSlot, load: Callable[[int], Model], metrics: Metrics) -> None:
        self._slot = slot
        self._load = load
        self._metrics = metrics
        self._wanted: int | None = None
        self._refused: set[int] = set()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

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
        """The alias now points at ``version``: serve it once it loads and warms up."""
        with self._wake:
            self._wanted = version
            self._wake.notify_all()

    def refused(self) -> set[int]:
        return set(self._refused)

    def _next(self) -> int | None:
        with self._wake:
            while not self._stopped and not self._needs(self._wanted):
                self._wake.wait()
            return None if self._stopped else self._wanted

    def _needs(self, version: int | None) -> bool:
        return (
            version is not None and version != self._slot.version and version not in self._refused
        )

    def _run(self) -> None:
        while (version := self._next()) is not None:
            self.swap_to(version)

    def swap_to(self, version: int) -> bool:
        """Load, warm and install ``version`` now; False (and counted) if it is refused."""
        try:
            model = self._load(version)
            model.warm_up()
            if model.version != version:
                raise ValueError(f"the artifact says version {model.version}, not {version}")
        except Exception as exc:
            self._refused.add(version)
            self._metrics.model_refusals.inc()
            log.error(
                "model version refused, the current one keeps serving",
                refused_version=version,
                model_version=self._slot.version,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        self._slot.install(model)
        return True
