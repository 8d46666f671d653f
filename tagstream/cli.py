"""``tagstream``: one typer app; each part contributes its commands from ``tagstream.commands``."""

from __future__ import annotations

import os
import sys

import typer

from common.errors import TagstreamError
from common.logging import configure
from tagstream.commands import (
    data,
    demo,
    models,
    monitor,
    produce,
    replay,
    schemas,
    stack,
    topics,
    trainer,
    trainer_service,
    worker,
)

app = typer.Typer(
    name="tagstream",
    help="Streaming multi-label news classification on Kafka, with a Redis model registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(stack.app, name="stack")
app.add_typer(topics.app, name="topics")
app.add_typer(data.app, name="data")
app.add_typer(schemas.app, name="schemas")
app.add_typer(models.app, name="models")
app.add_typer(trainer.app, name="trainer")
trainer_service.register(trainer.app)
app.add_typer(worker.app, name="worker")
app.add_typer(monitor.app, name="monitor")
app.command(name="produce")(produce.command)
app.command(name="replay")(replay.command)
app.command(name="demo")(demo.command)


def main() -> None:
    """Entry point: a TagstreamError ends the command with its one-line message."""
    configure(os.environ.get("TAGSTREAM_LOG_LEVEL", "INFO"))
    try:
        app()
    except TagstreamError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
