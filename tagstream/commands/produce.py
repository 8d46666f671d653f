"""``tagstream produce``: stream articles into Kafka at a chosen rate."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import typer

from common.settings import KafkaSettings, load
from corpus.jsonl import read_jsonl
from messaging import ensure_topics
from tagstream import feed


def command(
    split: feed.Split | None = typer.Option(None, help="A Reuters-21578 split."),
    file: Path | None = typer.Option(None, help="A JSON-lines file of articles instead."),
    topic: str = typer.Option("articles", help="Destination topic."),
    rate: float = typer.Option(0.0, help="Articles per second; 0 sends as fast as possible."),
    limit: int | None = typer.Option(None, help="Send at most this many."),
    labelled: bool = typer.Option(False, help="Send LabelledArticles (with gold labels)."),
    partitions: int = typer.Option(4, help="Partitions if the topic has to be created."),
) -> None:
    """Send articles keyed by id; with --labelled they keep their gold labels (for training)."""
    if (split is None) == (file is None):
        raise typer.BadParameter("give exactly one of --split or --file")
    source = read_jsonl(file) if file else iter(feed.split_articles(split or "test"))
    articles = islice(source, limit)
    settings = load(KafkaSettings)
    ensure_topics(settings, {topic: partitions})
    stream = articles if labelled else (feed.unlabelled(a) for a in articles)
    sent = feed.produce(settings, topic, stream, rate=rate or None)
    typer.echo(f"sent {sent} articles to {topic}")
