"""``tagstream worker run [--processes N]``: the streaming worker (``worker/``)."""

from __future__ import annotations

import typer

from worker.app import main

app = typer.Typer(
    help="Consume articles, predict in micro-batches, publish predictions.", no_args_is_help=True
)


@app.command()
def run(
    processes: int = typer.Option(
        1, "--processes", "-p", min=1, help="Worker processes on this host, sharing one group."
    ),
) -> None:
    """Run until SIGTERM/SIGINT (a second one exits at once). Settings: TAGSTREAM_WORKER_*."""
    raise typer.Exit(main(processes))
