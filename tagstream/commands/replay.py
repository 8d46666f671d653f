"""``tagstream replay``: re-score a time or offset range of the input topic with one version.

The replay reads without a consumer group, so the live workers' offsets are left alone, and
writes predictions to a topic of its own (``worker/replay.py`` has the details).
"""

from __future__ import annotations

import socket
from datetime import datetime

import typer

from common.errors import TagstreamError
from common.settings import KafkaSettings, RedisSettings, TopicSettings, load
from messaging import TopicSpec
from messaging.admin import admin
from model.loader import ModelLoader
from model.settings import RegistrySettings
from worker.models import classifier
from worker.replay import ReplayError, replay, spans_by_offsets, spans_by_time
from worker.results import Results
from worker.settings import WorkerSettings


def parse_offsets(values: list[str] | None, option: str) -> dict[int, int]:
    """``["0:100", "1:250"]`` -> ``{0: 100, 1: 250}``."""
    offsets = {}
    for value in values or []:
        partition, sep, offset = value.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise typer.BadParameter(f"{value!r} is not PARTITION:OFFSET", param_hint=option)
        offsets[int(partition)] = int(offset)
    return offsets


def command(
    output: str = typer.Option(..., "--output", "-o", help="Topic for the replayed predictions."),
    version: int = typer.Option(None, "--version", "-v", min=1, help="Registry version to use."),
    alias: str = typer.Option(
        None, "--alias", "-a", help="Use the version this alias points at now (e.g. canary)."
    ),
    topic: str = typer.Option(None, "--topic", help="Input topic; default the worker's."),
    dlq: str = typer.Option(None, "--dlq", help="Dead letters; default OUTPUT.dlq."),
    since: datetime = typer.Option(None, "--since", help="From the first record at this time."),
    until: datetime = typer.Option(None, "--until", help="Up to the first record at this time."),
    start: list[str] = typer.Option(None, "--from", help="PARTITION:OFFSET to start at."),
    stop: list[str] = typer.Option(None, "--to", help="PARTITION:OFFSET to stop before."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=4096),
) -> None:
    """Re-score part of the input topic with a chosen model version, into OUTPUT.

    Give a time range (--since/--until, UTC unless an offset is given) or offset ranges per
    partition (--from/--to, repeatable); with neither, the whole topic as it is now. Times are
    record timestamps. The live group's committed offsets are not touched.
    """
    if (version is None) == (alias is None):
        raise typer.BadParameter("give exactly one of --version and --alias")
    if (since or until) and (start or stop):
        raise typer.BadParameter("give a time range or offset ranges, not both")
    worker = load(WorkerSettings)
    kafka = load(KafkaSettings)
    sizes = load(TopicSettings)
    source = topic or worker.input_topic
    dead_letters = dlq or f"{output}.dlq"
    with admin(kafka) as client:
        if source not in client.list_topics():
            raise TagstreamError(f"the input topic {source} does not exist")
        if since or until:
            spans = spans_by_time(client, source, since, until)
        else:
            spans = spans_by_offsets(
                client, source, parse_offsets(start, "--from"), parse_offsets(stop, "--to")
            )
        partitions = len(client.describe([source]))
        shared = {
            "replication_factor": sizes.replication_factor,
            "min_insync_replicas": sizes.min_insync_replicas,
        }
        client.create_topics(
            [TopicSpec(output, partitions, **shared), TopicSpec(dead_letters, 1, **shared)]
        )
    with ModelLoader.from_settings(load(RedisSettings), load(RegistrySettings)) as loader:
        loaded = loader.load_version(version) if version is not None else loader.load(alias)
    model = classifier(loaded.data, loaded.manifest.artifact_sha256, loaded.version, worker)
    results = Results(
        output,
        dead_letters,
        f"replay-{socket.gethostname()}",
        include_scores=worker.include_scores,
        max_payload_bytes=worker.dlq_max_payload_bytes,
    )
    typer.echo(
        f"replaying {sum(s.size for s in spans.values())} records of {source} "
        f"with version {model.version} into {output}"
    )
    for tp, span in sorted(spans.items()):
        typer.echo(f"  partition {tp.partition}: offsets [{span.start}, {span.stop})")
    try:
        summary = replay(
            kafka,
            model,
            spans,
            results,
            batch_size=batch_size,
            bucket_size=worker.bucket_size,
            max_body_bytes=worker.max_body_bytes,
            max_message_bytes=worker.max_message_bytes,
        )
    except ReplayError as exc:
        raise TagstreamError(f"replay failed: {exc}") from exc
    letters = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.dead_lettered.items()))
    typer.echo(
        f"replayed {summary.read} records in {summary.seconds:.1f} s: "
        f"{summary.predicted} predicted, {sum(summary.dead_lettered.values())} dead-lettered"
        + (f" ({letters})" if letters else "")
    )
