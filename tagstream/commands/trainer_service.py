"""``tagstream trainer serve`` and ``tagstream trainer run-once``: the retraining service."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from common.logging import configure, get_logger
from common.settings import KafkaSettings, RedisSettings, load
from model.settings import RegistrySettings
from trainer.profiles import PROFILES
from trainer.service import TrainerService, run_once
from trainer.settings import TrainerSettings


def _service(profile: str | None = None) -> TrainerService:
    settings = load(TrainerSettings)
    if profile is not None:
        settings = settings.model_copy(update={"profile": profile})
    configure(settings.log_level)
    return TrainerService(
        settings, load(KafkaSettings), load(RedisSettings), load(RegistrySettings)
    )


def serve() -> None:
    """Consume labelled articles; retrain when due; promote when not worse. Runs until stopped."""
    service = _service()
    stop = threading.Event()
    log = get_logger("trainer")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(130)  # a second signal: leave at once
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "serving",
        topic=service.settings.topic,
        store=str(service.settings.store_path),
        stored=service.store.count(),
    )
    service.run(stop)
    log.info(
        "stopped", cycles=len(service.results), promoted=sum(r.promoted for r in service.results)
    )


def run_once_command(
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="Training profile (fast, full) [TAGSTREAM_TRAINER_PROFILE, default fast].",
    ),
) -> None:
    """Store what the labelled topic holds now, run one training cycle, exit non-zero on failure."""
    if profile is not None and profile not in PROFILES:
        raise typer.BadParameter(f"choose one of {sorted(PROFILES)}", param_hint="--profile")
    result = run_once(_service(profile))
    typer.echo(
        f"{'promoted' if result.promoted else 'not promoted'}: {result.reason}"
        + (f" (version {result.version})" if result.version else "")
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``run-once`` to the ``trainer`` sub-app."""
    app.command("serve")(serve)
    app.command("run-once")(run_once_command)
