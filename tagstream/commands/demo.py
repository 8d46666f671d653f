"""``tagstream demo``: the whole system on this machine (see ``tagstream.demo``)."""

from __future__ import annotations

import typer
from rich.console import Console

from tagstream.demo import run_demo


def command(
    rate: float = typer.Option(12.0, help="Test articles per second into the input topic."),
    limit: int | None = typer.Option(None, help="Stream only this many test articles."),
) -> None:
    """Start the stack, train and publish a model, run 2 workers and the trainer, stream, report."""
    run_demo(rate, limit, Console())
