"""``python -m tagstream`` runs the CLI."""

from tagstream.cli import main

main()
