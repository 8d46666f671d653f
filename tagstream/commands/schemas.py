"""``tagstream schemas export [--check]``: the JSON Schema files in ``schemas/json/``."""

from __future__ import annotations

import typer

from schemas import export

app = typer.Typer(
    help="Generate or check the JSON Schema files of the wire contracts.", no_args_is_help=True
)


@app.command("export")
def export_schemas(
    check: bool = typer.Option(False, "--check", help="Fail if the files are stale; write none."),
) -> None:
    """Write schemas/json/*.schema.json from the pydantic models."""
    if check:
        stale = export.stale()
        if stale:
            typer.echo(f"stale: {', '.join(stale)}; run `tagstream schemas export`", err=True)
            raise typer.Exit(1)
        typer.echo("schemas are up to date")
        return
    for path in export.write():
        typer.echo(f"wrote {path}")
