"""Local disk cache of verified artifacts, so workers survive Redis outages and restarts.

Layout under the cache directory::

    {sha256}.artifact                 artifact bytes, named by their own sha256
    aliases/{namespace}/{alias}.json  manifest of the model an alias last resolved to here

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written entry; every read re-checks the sha256, and a file that fails is deleted and
treated as absent. Eviction keeps the ``max_entries`` most recently used artifacts and never
removes one an alias file names.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from pydantic import ValidationError

from common.logging import get_logger
from model.registry import sha256_hex
from schemas.manifest import ModelManifest

log = get_logger("model.cache")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def touch(path: Path) -> None:
    """Mark ``path`` as used now, to the nanosecond (file systems' own clocks are coarser)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class ArtifactCache:
    """Artifacts on local disk, addressed by sha256."""

    def __init__(self, root: Path, max_entries: int = 8):
        self.root = root.expanduser()
        self.max_entries = max_entries

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / f"{sha256}.artifact"

    def get(self, sha256: str) -> bytes | None:
        """The cached bytes with this sha256, or None if absent or corrupt (then deleted)."""
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if sha256_hex(data) != sha256:
            log.warning("cache entry corrupt", path=str(path))
            path.unlink(missing_ok=True)
            return None
        touch(path)
        return data

    def put(self, data: bytes, sha256: str) -> Path:
        """Store ``data`` (which must hash to ``sha256``) and evict beyond ``max_entries``."""
        if sha256_hex(data) != sha256:
            raise ValueError("refusing to cache bytes under a sha256 they do not have")
        path = self.path(sha256)
        write_atomically(path, data)
        touch(path)
        self.evict()
        return path

    def remember(self, namespace: str, alias: str, manifest: ModelManifest) -> None:
        """Record that ``alias`` resolved to ``manifest``, for use while Redis is away."""
        write_atomically(self._alias_path(namespace, alias), manifest.model_dump_json().encode())

    def recall(self, namespace: str, alias: str) -> ModelManifest | None:
        """The manifest ``alias`` last resolved to on this machine, if any."""
        path = self._alias_path(namespace, alias)
        try:
            return ModelManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            log.warning("cache alias corrupt", path=str(path))
            return None

    def entries(self) -> list[Path]:
        """Cached artifact files, most recently used first."""
        files = [path for path in self.root.glob("*.artifact") if SHA256.match(path.stem)]
        return sorted(files, key=lambda path: path.stat().st_mtime_ns, reverse=True)

    def evict(self) -> list[Path]:
        """Delete the least recently used artifacts beyond ``max_entries``; return them."""
        pinned = self._pinned()
        entries = self.entries()
        removable = [path for path in entries if path.stem not in pinned]
        excess = max(0, len(entries) - self.max_entries)
        evicted = removable[max(0, len(removable) - excess) :] if excess else []
        for path in evicted:
            path.unlink(missing_ok=True)
            log.info("cache entry evicted", path=str(path))
        return evicted

    def _pinned(self) -> set[str]:
        pinned: set[str] = set()
        for path in (self.root / "aliases").glob("*/*.json"):
            try:
                manifest = ModelManifest.model_validate_json(path.read_bytes())
            except (OSError, ValidationError):
                continue
            if manifest.artifact_sha256:
                pinned.add(manifest.artifact_sha256)
        return pinned

    def _alias_path(self, namespace: str, alias: str) -> Path:
        return self.root / "aliases" / UNSAFE.sub("_", namespace) / f"{UNSAFE.sub('_', alias)}.json"
