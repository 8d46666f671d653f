"""Settings of the model registry and its local cache (``TAGSTREAM_REGISTRY_*``).

How to reach Redis (URL, password, TLS, key namespace) is :class:`common.settings.RedisSettings`;
this class holds what the registry does once connected.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from common.paths import cache_dir
from common.settings import settings_config

MIB = 1024 * 1024


def default_model_cache() -> Path:
    """``~/.cache/tagstream/models`` (or ``$TAGSTREAM_CACHE/models``)."""
    return cache_dir() / "models"


class RegistrySettings(BaseSettings):
    """The model registry: chunking, retention, alias signalling, authenticity and the local
    disk cache."""

    model_config = settings_config("TAGSTREAM_REGISTRY_")

    chunk_bytes: int = Field(default=4 * MIB, ge=1024, le=256 * MIB)
    """Artifacts are stored in Redis as chunks of at most this many bytes."""

    retention: int = Field(default=10, ge=1)
    """Keep the newest N versions; versions an alias holds or would roll back to are kept too."""

    history_length: int = Field(default=20, ge=1)
    """How many previous holders each alias remembers for rollback."""

    staging_ttl_s: int = Field(default=300, ge=1)
    """An unfinished upload vanishes this long after its last chunk was written."""

    pubsub: bool = True
    """Listen for alias changes on pub/sub; polling runs either way as the fallback."""

    poll_interval_s: float = Field(default=0.5, gt=0, le=60)
    """How often the watcher re-reads the aliases, and how long it waits per pub/sub read."""

    cache_dir: Path = Field(default_factory=default_model_cache)
    """Local disk cache of verified artifacts, by sha256."""

    cache_max_entries: int = Field(default=8, ge=1)
    """Artifacts kept in the disk cache; the ones an alias last pointed at are never evicted."""

    signing_key: SecretStr | None = None
    """Registry authenticity (``model.signing``): with a key, publishers sign each version's
    manifest (its artifact sha256 and size included) and every load refuses a version whose
    signature is missing or wrong. Unset or empty: no signature written, none checked."""

    @field_validator("signing_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        """An empty key (a Secret's placeholder) means no key, as empty passwords do."""
        return None if value == "" else value
