"""One typer sub-app per module; ``tagstream.cli`` puts them together."""
