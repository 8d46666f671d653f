"""``tagstream topics create|describe|lag``: the project's topics and a group's progress."""

from __future__ import annotations

import typer

from common.settings import KafkaSettings, TopicSettings, load
from messaging import TopicSpec
from messaging.admin import admin
from trainer.settings import TrainerSettings
from worker.settings import WorkerSettings

app = typer.Typer(
    help="Create and inspect the project's Kafka topics (names from the worker's and the "
    "trainer's settings; sizes from TAGSTREAM_TOPICS_*).",
    no_args_is_help=True,
)


def project_topics() -> list[TopicSpec]:
    """The four topics the system uses, as the settings in the environment name and size them."""
    sizes = load(TopicSettings)
    worker = load(WorkerSettings)
    trainer = load(TrainerSettings)
    shared = {
        "replication_factor": sizes.replication_factor,
        "min_insync_replicas": sizes.min_insync_replicas,
        "retention_ms": sizes.retention_ms,
    }
    return [
        TopicSpec(worker.input_topic, sizes.input_partitions, **shared),
        TopicSpec(worker.output_topic, sizes.output_partitions, **shared),
        TopicSpec(worker.dlq_topic, sizes.dlq_partitions, **shared),
        TopicSpec(trainer.topic, sizes.labelled_partitions, **shared),
    ]


@app.command()
def create() -> None:
    """Create the project's topics that do not exist yet (an existing one is left as it is)."""
    specs = project_topics()
    with admin(load(KafkaSettings)) as client:
        made = client.create_topics(specs)
    for spec in specs:
        state = "created" if spec.name in made else "exists"
        typer.echo(f"{state:<8} {spec.name} partitions={spec.partitions}")


@app.command()
def describe(
    topic: list[str] = typer.Argument(None, help="Topics to describe; default the project's."),
) -> None:
    """Partitions, leaders, replicas and in-sync replicas; the topic settings that differ
    from the broker's defaults."""
    names = topic or [spec.name for spec in project_topics()]
    with admin(load(KafkaSettings)) as client:
        existing = client.list_topics()
        for name in names:
            if name not in existing:
                typer.echo(f"{name}: missing (create it with `tagstream topics create`)")
                continue
            partitions = [p for p in client.describe([name]) if p.topic == name]
            configs = client.topic_configs(name)
            settings = " ".join(f"{k}={v}" for k, v in sorted(configs.items()))
            typer.echo(f"{name}: {len(partitions)} partitions {settings}".rstrip())
            for p in sorted(partitions, key=lambda p: p.partition):
                flag = "  UNDER-REPLICATED" if p.under_replicated else ""
                typer.echo(
                    f"  partition {p.partition}: leader {p.leader} replicas "
                    f"{list(p.replicas)} isr {list(p.isr)}{flag}"
                )


@app.command()
def lag(
    group: str = typer.Option(None, help="Consumer group; default the worker's group id."),
    topic: str = typer.Option(None, help="Topic; default the worker's input topic."),
) -> None:
    """A consumer group's committed offset, end offset and lag per partition, and in total."""
    worker = load(WorkerSettings)
    group = group or worker.group_id
    topic = topic or worker.input_topic
    with admin(load(KafkaSettings)) as client:
        rows = client.group_lag(group, topic)
    typer.echo(f"group {group} on {topic}")
    for row in rows:
        committed = "-" if row.committed is None else str(row.committed)
        typer.echo(
            f"  partition {row.tp.partition}: committed {committed} end {row.end} lag {row.lag}"
        )
    typer.echo(f"total lag {sum(row.lag for row in rows)}")
