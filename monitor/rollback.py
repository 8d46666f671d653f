"""When live figures say production is worse than the version it replaced.

Two rules, each needing enough evidence before it speaks:

- *quality*: production's live micro-F1 is below the previous version's by more than
  ``rollback_margin``, both measured over at least ``min_labelled`` labelled articles (the
  previous version's window holds what it scored before it was replaced, or as a shadow);
- *agreement*: over at least ``min_shared`` articles both versions scored (a shadow pass), they
  gave the same label set to fewer than ``min_agreement`` of them.

A version passes every integrity check and the trainer's holdout and can still do badly on
the live stream (a feed that changed, a threshold that does not transfer); these rules are
for that case.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.quality import Agreement, Join
from monitor.settings import MonitorSettings


@dataclass(frozen=True)
class Verdict:
    """Roll back ``production`` to ``previous``, and why."""

    production: int
    previous: int
    reason: str


def judge(
    production: int,
    previous: int,
    join: Join,
    agreement: Agreement,
    settings: MonitorSettings,
) -> Verdict | None:
    """A verdict when a rule holds with enough evidence; None otherwise."""
    now, before = join.figures(production), join.figures(previous)
    if (
        now.count >= settings.min_labelled
        and before.count >= settings.min_labelled
        and now.micro_f1 < before.micro_f1 - settings.rollback_margin
    ):
        return Verdict(
            production,
            previous,
            f"live micro-F1 of version {production} is {now.micro_f1:.3f} over {now.count} "
            f"labelled articles, below version {previous}'s {before.micro_f1:.3f} over "
            f"{before.count} by more than the margin {settings.rollback_margin:g}",
        )
    share, shared = agreement.share(production, previous)
    if shared >= settings.min_shared and share < settings.min_agreement:
        return Verdict(
            production,
            previous,
            f"version {production} gives the same labels as version {previous} to only "
            f"{share:.1%} of {shared} articles both scored (floor {settings.min_agreement:.0%})",
        )
    return None
