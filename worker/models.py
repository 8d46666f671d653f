"""Where the worker's models come from: the registry alias (with hot swap) or a local file."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from common.logging import get_logger
from common.settings import RedisSettings
from model.artifact import Artifact
from model.errors import ModelError
from model.inference import Classifier
from model.loader import ModelLoader
from model.settings import RegistrySettings
from model.watcher import AliasChange, AliasWatcher
from worker.errors import NoModelError
from worker.inference import Model
from worker.offload import InferenceProcess, OffloadedModel
from worker.settings import WorkerSettings
from worker.swap import Swapper

log = get_logger("worker.models")

RETRY_S = 1.0


class Models(Protocol):
    """A source of models: the one serving now, and a given version."""

    def current(self) -> Model: ...

    def version(self, version: int) -> Model: ...

    def watch(self, swapper: Swapper, serving: int) -> None:
        """Tell ``swapper`` about every change of the alias from ``serving`` (the version
        loaded at start) on, including one that landed while that version loaded."""

    def close(self) -> None: ...


def classifier(
    data: bytes,
    sha256: str | None,
    version: int,
    settings: WorkerSettings,
    offload: InferenceProcess | None = None,
) -> Model:
    """Verified bytes -> a classifier on the configured device, or one whose forward passes
    run in ``offload`` (not yet warmed up)."""
    if offload is not None:
        return OffloadedModel(data, sha256, version, offload)
    artifact = Artifact.from_bytes(data, sha256)
    return Classifier.from_artifact(
        artifact,
        version=version,
        device=settings.device,
        threads=settings.threads,
        runtime=settings.runtime,
        bucket_size=settings.bucket_size,
    )


class RegistryModels:
    """Models from the Redis registry alias ``settings.model_alias``; swaps on alias changes."""

    def __init__(
        self,
        settings: WorkerSettings,
        redis: RedisSettings,
        registry: RegistrySettings,
        offload: InferenceProcess | None = None,
    ) -> None:
        self._settings = settings
        self._offload = offload
        self._loader = ModelLoader.from_settings(redis, registry)
        self._watcher: AliasWatcher | None = None

    def current(self) -> Model:
        loaded = self._loader.load(self._settings.model_alias)
        return classifier(
            loaded.data,
            loaded.manifest.artifact_sha256,
            loaded.version,
            self._settings,
            self._offload,
        )

    def version(self, version: int) -> Model:
        loaded = self._loader.load_version(version)
        return classifier(
            loaded.data,
            loaded.manifest.artifact_sha256,
            loaded.version,
            self._settings,
            self._offload,
        )

    def watch(self, swapper: Swapper, serving: int) -> None:
        alias = self._settings.model_alias

        def on_change(change: AliasChange) -> None:
            if change.alias == alias and change.version is not None:
                log.info(
                    "alias changed", alias=alias, version=change.version, previous=change.previous
                )
                swapper.want(change.version)

        watcher = AliasWatcher(self._loader.registry, on_change, known={alias: serving})
        self._watcher = watcher.start()

    def watch_alias(self, alias: str, want: Callable[[int | None], None]) -> None:
        """Tell ``want`` the version ``alias`` points at now, then every change of it (None
        when the alias is unset or cannot be read at start)."""
        known: dict[str, int] | None
        try:
            known = self._loader.registry.aliases()
        except ModelError:
            known = None  # the watcher reads them when Redis answers
        want(known.get(alias) if known is not None else None)

        def on_change(change: AliasChange) -> None:
            if change.alias == alias:
                want(change.version)

        self._watcher = AliasWatcher(self._loader.registry, on_change, known=known).start()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        self._loader.close()


class FileModels:
    """One model from an artifact file; nothing to watch."""

    def __init__(
        self, path: Path, settings: WorkerSettings, offload: InferenceProcess | None = None
    ) -> None:
        self._path = path
        self._settings = settings
        self._offload = offload

    def current(self) -> Model:
        data = self._path.read_bytes()
        version = Artifact.from_bytes(data).manifest.version or 1
        return classifier(data, None, version, self._settings, self._offload)

    def version(self, version: int) -> Model:
        raise NoModelError(f"serving {self._path}: there are no other versions")

    def watch(self, swapper: Swapper, serving: int) -> None:
        """A file does not change its alias."""

    def close(self) -> None:
        """Nothing is held open."""


def open_models(
    settings: WorkerSettings,
    redis: RedisSettings,
    registry: RegistrySettings,
    offload: InferenceProcess | None = None,
) -> Models:
    if settings.model_path is not None:
        return FileModels(settings.model_path, settings, offload)
    return RegistryModels(settings, redis, registry, offload)


def first_model(models: Models, stop: threading.Event) -> Model | None:
    """The model to start with, warmed up; while there is none (alias unset, registry
    unreachable, artifact refused or failing) it says why once and tries again every second.
    None if stopped first."""
    last_reason = None
    while not stop.is_set():
        try:
            model = models.current()
            model.warm_up()
            return model
        except Exception as exc:  # a broken alias may be fixed by a promote or rollback
            reason = f"{type(exc).__name__}: {exc}"
            if reason != last_reason:
                log.warning("no model to serve yet; retrying", error=reason, retry_s=RETRY_S)
                last_reason = reason
            stop.wait(RETRY_S)
    return None
