"""``tagstream``: one typer app; each service contributes a sub-app from ``tagstream.commands``."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from common.errors import TagstreamError
from common.logging import configure

app = typer.Typer(
    name="tagstream",
    help="Streaming multi-label news classification on Kafka, with a Redis model registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SUBCOMMANDS = {
    "stack": "tagstream.commands.stack",
    "data": "tagstream.commands.data",
    "schemas": "tagstream.commands.schemas",
    "models": "tagstream.commands.models",
    "trainer": "tagstream.commands.trainer",
    "worker": "tagstream.commands.worker",
    "produce": "tagstream.commands.produce",
    "demo": "tagstream.commands.demo",
}

for _name, _module in SUBCOMMANDS.items():
    try:
        _commands = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:  # a service still being built is simply absent
        if _exc.name != _module:
            raise
        continue
    if hasattr(_commands, "app"):
        app.add_typer(_commands.app, name=_name)
    else:  # a module with a single command exposes it as ``command``
        app.command(name=_name)(_commands.command)


def main() -> None:
    """Entry point: a TagstreamError ends the command with its one-line message."""
    configure(os.environ.get("TAGSTREAM_LOG_LEVEL", "INFO"))
    try:
        app()
    except TagstreamError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
