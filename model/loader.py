"""What the worker and trainer call to get a model: verified artifact bytes for an alias.

Order of preference, so that a warm worker downloads nothing it already has and a restarted
worker keeps serving while Redis is away::

    Redis reachable:  alias -> manifest -> bytes from the disk cache by sha256,
                      else from Redis (size and sha256 checked), then cached
    Redis down:       the manifest this alias last resolved to here -> bytes from the cache

Cached bytes pass the same :func:`model.registry.verify` as downloaded ones, signature
included when a signing key is set. A tampered, malformed or wrongly signed artifact raises
:class:`ArtifactError` and is never cached; the caller keeps the model it is serving.
Deserialising the bytes is the caller's business (``model.artifact``), after this check.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from common.logging import get_logger
from common.settings import RedisSettings
from model.cache import ArtifactCache
from model.errors import RegistryError
from model.registry import Registry, check_alias, verify
from model.settings import RegistrySettings
from schemas.manifest import ModelManifest

log = get_logger("model.loader")


@dataclass(frozen=True)
class LoadedModel:
    """Artifact bytes whose sha256 matched ``manifest``, and where they came from."""

    manifest: ModelManifest
    data: bytes
    source: Literal["cache", "redis"]

    @property
    def version(self) -> int:
        assert self.manifest.version is not None
        return self.manifest.version


class ModelLoader:
    """Resolves aliases or versions to verified artifact bytes via the registry and disk cache."""

    def __init__(self, registry: Registry, cache: ArtifactCache):
        self.registry = registry
        self.cache = cache

    @classmethod
    def from_settings(cls, redis_settings: RedisSettings, settings: RegistrySettings) -> Self:
        registry = Registry.from_settings(redis_settings, settings)
        return cls(registry, ArtifactCache(settings.cache_dir, settings.cache_max_entries))

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def load(self, alias: str = "production") -> LoadedModel:
        """The model ``alias`` points at; from the disk cache alone when Redis is unreachable."""
        check_alias(alias)
        try:
            manifest = self.registry.manifest(self.registry.resolve(alias))
            model = self._materialise(manifest)
        except RegistryError as exc:
            return self._last_known(alias, exc)
        self.cache.remember(self.registry.keys.namespace, alias, manifest)
        return model

    def load_version(self, version: int) -> LoadedModel:
        """The model with this version number (Redis needed unless the bytes are cached).

        Aliases that point at ``version`` now are remembered too, so a worker that swapped
        to it on an alias change restarts on it while Redis is away.
        """
        model = self._materialise(self.registry.manifest(version))
        for alias in self._aliases_at(version):
            self.cache.remember(self.registry.keys.namespace, alias, model.manifest)
        return model

    def _aliases_at(self, version: int) -> list[str]:
        try:
            aliases = self.registry.aliases()
        except RegistryError:
            return []
        return [alias for alias, held in aliases.items() if held == version]

    def _materialise(self, manifest: ModelManifest) -> LoadedModel:
        assert manifest.artifact_sha256 is not None and manifest.version is not None
        cached = self.cache.get(manifest.artifact_sha256)
        if cached is not None:
            verify(cached, manifest, key=self.registry.settings.signing_key, sha256_known=True)
            log.info("model loaded", version=manifest.version, source="cache")
            return LoadedModel(manifest, cached, "cache")
        data = self.registry.fetch(manifest.version)
        self.cache.put(data, manifest.artifact_sha256)
        log.info("model loaded", version=manifest.version, source="redis", bytes=len(data))
        return LoadedModel(manifest, data, "redis")

    def _last_known(self, alias: str, cause: RegistryError) -> LoadedModel:
        namespace = self.registry.keys.namespace
        manifest = self.cache.recall(namespace, alias)
        data = None if manifest is None else self.cache.get(manifest.artifact_sha256 or "0" * 64)
        if manifest is None or data is None:
            raise RegistryError(
                f"registry unreachable and no cached model for alias {alias!r}: {cause}"
            ) from cause
        verify(data, manifest, key=self.registry.settings.signing_key, sha256_known=True)
        log.warning(
            "model loaded offline", alias=alias, version=manifest.version, reason=str(cause)
        )
        return LoadedModel(manifest, data, "cache")
