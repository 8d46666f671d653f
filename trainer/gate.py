"""The promotion gate: candidate against production on the fixed holdout.

Both are scored by :func:`trainer.evaluate.evaluate_artifact` (the one micro-F1 path). The
candidate passes when there is no production model, or when its micro-F1 *and* macro-F1 are
each no worse by more than the margin than the best of the alias's last ``gate_history``
versions, so quality cannot slide by the margin every cycle. The baseline names the version
the alias held when measured: the promote's compare-and-set expects it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from common.logging import get_logger
from model.artifact import Artifact
from model.errors import ModelError
from model.registry import Registry
from schemas import LabelledArticle
from trainer.datasets import Datasets
from trainer.evaluate import evaluate_artifact
from trainer.settings import TrainerSettings

log = get_logger("trainer")


@dataclass(frozen=True)
class Baseline:
    """What the gate compares a candidate with."""

    current: int | None
    """The version the alias held when measured: the promote's compare-and-set expects it."""
    scores: tuple[float, float] | None
    """Best micro-F1 and best macro-F1 over ``versions`` on the holdout (None: no model)."""
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What the gate decided for one candidate, and from what."""

    promote: bool
    reason: str
    candidate: tuple[float, float]
    """The candidate's holdout (micro-F1, macro-F1)."""
    baseline: Baseline


class Gate:
    """Decides promotion; holdout scores of published versions are measured once per artifact."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self._holdout_scores: dict[str, tuple[float, float]] = {}

    def judge(self, artifact: Artifact, registry: Registry, data: Datasets) -> Verdict:
        """Score the candidate and the baseline on the holdout and decide."""
        candidate = holdout_scores(artifact, data.holdout, data.labels)
        baseline = self.baseline(registry, data)
        margin = self.settings.promotion_margin
        promote = passes_gate(candidate, baseline.scores, margin)
        return Verdict(promote, _reason(promote, candidate, baseline, margin), candidate, baseline)

    def baseline(self, registry: Registry, data: Datasets) -> Baseline:
        """The alias's current version and the best holdout scores of it and the
        ``gate_history - 1`` versions it held before (those retention has deleted, or that no
        longer load, are left out with a warning; the current one must load)."""
        alias = self.settings.alias
        current = registry.aliases().get(alias)
        if current is None:
            return Baseline(None, None)
        earlier = list(dict.fromkeys(v for v in registry.history(alias) if v != current))
        measured = {current: self._scores_of(registry, current, data)}
        for version in earlier[: self.settings.gate_history - 1]:
            try:
                measured[version] = self._scores_of(registry, version, data)
            except ModelError as exc:
                log.warning("gate leaves out an earlier version", version=version, error=str(exc))
        return Baseline(current, best_scores(measured.values()), tuple(measured))

    def _scores_of(self, registry: Registry, version: int, data: Datasets) -> tuple[float, float]:
        """Holdout (micro, macro) of a published version, measured once per artifact."""
        manifest = registry.manifest(version)
        digest = manifest.artifact_sha256 or ""
        if digest not in self._holdout_scores:
            artifact = Artifact.from_bytes(registry.fetch(version), digest)
            self._holdout_scores[digest] = holdout_scores(artifact, data.holdout, data.labels)
        return self._holdout_scores[digest]


def holdout_scores(
    artifact: Artifact, articles: list[LabelledArticle], labels: list[str]
) -> tuple[float, float]:
    """(micro-F1, macro-F1) of the artifact's decisions on ``articles``, computed by
    :func:`trainer.evaluate.evaluate_artifact` (gold labels outside ``labels`` dropped)."""
    measured = evaluate_artifact(artifact, articles, labels)
    return measured["micro_f1"], measured["macro_f1"]


def best_scores(scores: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """The best micro-F1 and the best macro-F1 among ``scores`` (None when empty)."""
    measured = list(scores)
    if not measured:
        return None
    return max(micro for micro, _ in measured), max(macro for _, macro in measured)


def passes_gate(
    candidate: tuple[float, float], production: tuple[float, float] | None, margin: float
) -> bool:
    """Promote when there is no production model, or when the candidate's holdout micro-F1
    *and* macro-F1 are each no worse than production's by more than ``margin``."""
    if production is None:
        return True
    return all(mine >= theirs - margin for mine, theirs in zip(candidate, production, strict=True))


def _reason(
    promote: bool, candidate: tuple[float, float], baseline: Baseline, margin: float
) -> str:
    """Why the gate decided: micro- and macro-F1 must both be within ``margin`` of the best of
    the versions measured."""
    production = baseline.scores
    if production is None:
        return "no production model yet"
    parts = []
    for name, mine, theirs in zip(("micro", "macro"), candidate, production, strict=True):
        relation = ">=" if mine >= theirs - margin else "<"
        parts.append(f"{name} {mine:.4f} {relation} production {theirs:.4f} - margin {margin}")
    if len(baseline.versions) > 1:
        parts.append(f"production = best of versions {', '.join(map(str, baseline.versions))}")
    return "candidate " + ", ".join(parts)
