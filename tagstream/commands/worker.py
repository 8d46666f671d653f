"""``tagstream worker run [--processes N]``: the streaming worker."""

from __future__ import annotations

import sys

import typer

from common.errors import TagstreamError
from common.logging import configure
from common.settings import KafkaSettings, RedisSettings, load
from model.settings import RegistrySettings
from worker.app import Worker
from worker.settings import WorkerSettings
from worker.supervisor import supervise

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
    settings = load(WorkerSettings)
    configure(settings.log_level)
    if processes > 1:
        raise typer.Exit(supervise(settings, processes))
    Worker(settings, load(KafkaSettings), load(RedisSettings), load(RegistrySettings)).run()


def main() -> None:
    """``python -m worker``: one worker; a TagstreamError ends it with its one-line message."""
    try:
        run(processes=1)
    except TagstreamError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
