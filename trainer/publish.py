"""A candidate that passed the gate into the Redis registry: publish, canary stage, promote.

Every write carries the training lock's fencing token, which the registry checks atomically:
a stale token (the lock expired and another trainer took it) is a :class:`LockLostError`. The
promote is a compare-and-set on the version the gate measured, so a manual promote or
rollback during the cycle stands. With ``canary_s`` set, the version serves as the canary
that long before it goes to production (workers shadow-score it meanwhile); a canary stage
cut short by a stop promotes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

from common.logging import get_logger
from model.artifact import Artifact
from model.errors import AliasMovedError, FencedError
from model.registry import Fence, Registry
from trainer.errors import LockLostError
from trainer.settings import TrainerSettings

log = get_logger("trainer")


@dataclass(frozen=True)
class Publication:
    """Where a publish ended."""

    version: int
    not_promoted: str | None = None
    """Why the version was published but not promoted (None: promoted)."""
    canary_cut_short: bool = False


def publish_and_promote(
    registry: Registry,
    artifact: Artifact,
    holdout_f1: float,
    fence: Fence,
    expected_current: int | None,
    *,
    settings: TrainerSettings,
    stopping: threading.Event,
) -> Publication:
    """Publish and promote ``artifact`` to ``settings.alias`` under ``fence``, the promote
    expecting the alias to hold ``expected_current`` (None: no version)."""
    manifest = artifact.manifest.model_copy(
        update={"metrics": {**artifact.manifest.metrics, "holdout_micro_f1": holdout_f1}}
    )
    expected: int | Literal["unset"] = "unset" if expected_current is None else expected_current
    try:
        version = registry.publish(artifact.to_bytes(), manifest, fence=fence)
        if not _canary_stage(registry, version, fence, settings, stopping):
            why = (
                f"published version {version} not promoted: the service stopped during "
                "its canary stage (it stays the canary)"
            )
            return Publication(version, why, canary_cut_short=True)
        registry.promote(version, settings.alias, fence=fence, expected_current=expected)
    except FencedError as exc:
        raise LockLostError(f"fenced off by the registry: {exc}") from exc
    except AliasMovedError as exc:
        log.warning("promotion refused: the alias moved during the cycle", error=str(exc))
        why = (
            f"published version {version} not promoted: {settings.alias} moved "
            f"during the cycle ({exc})"
        )
        return Publication(version, why)
    return Publication(version)


def _canary_stage(
    registry: Registry,
    version: int,
    fence: Fence,
    settings: TrainerSettings,
    stopping: threading.Event,
) -> bool:
    """Serve ``version`` as the canary for ``canary_s`` before it goes to production. False
    when ``stopping`` was set during the wait."""
    if settings.canary_s <= 0 or settings.alias != "production":
        return True
    registry.promote(version, "canary", fence=fence)
    log.info("Canary stage started.", version=version, seconds=settings.canary_s)
    if stopping.wait(settings.canary_s):
        log.info("Canary stage cut short: the service is stopping.", version=version)
        return False
    log.info("Canary stage over.", version=version)
    return True
