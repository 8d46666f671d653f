"""``tagstream stack install|up|down|status|node``: the local Apache Kafka + Redis."""

from __future__ import annotations

from typing import Literal

import typer

from common.errors import StackError
from common.settings import KafkaSettings, load
from messaging import MessagingError
from messaging.admin import admin
from tagstream import stack as local

app = typer.Typer(
    help="Run a local Apache Kafka (KRaft) and Redis in the background.", no_args_is_help=True
)


def _stack(brokers: int | None = None) -> local.LocalStack:
    settings = load(local.StackSettings)
    if brokers is not None:
        if brokers not in (1, 3):
            raise typer.BadParameter("one broker, or a cluster of 3", param_hint="--brokers")
        settings = settings.model_copy(update={"brokers": brokers})
    return local.LocalStack(settings)


def _print_urls(state: local.StackState) -> None:
    if state.sasl_port:
        typer.echo(
            f"KAFKA_SASL_BOOTSTRAP={state.kafka_sasl_bootstrap} (SASL_PLAINTEXT, "
            f"SCRAM-SHA-512, user {local.SASL_USER}, password in the stack's sasl.json)"
        )
    typer.echo(f"KAFKA_BOOTSTRAP={state.kafka_bootstrap}")
    typer.echo(f"REDIS_URL={state.redis_url}")


@app.command()
def install() -> None:
    """Fetch the Kafka jars into the cache and check that java and redis-server exist."""
    local.install()


@app.command()
def up(
    brokers: int | None = typer.Option(
        None,
        help="Kafka nodes: 1, or 3 (one KRaft quorum, replication factor 3, min ISR 2); "
        "default TAGSTREAM_STACK_BROKERS, else 1.",
    ),
) -> None:
    """Start Kafka and Redis (or report the running stack); the last two lines are the URLs."""
    stack = _stack(brokers)
    state, started = stack.up()
    pids = ", ".join(str(pid) for pid in state.kafka_pids)
    typer.echo(
        f"{'started' if started else 'already running'}: kafka pid {pids}, "
        f"redis pid {state.redis_pid}, in {stack.dir}"
    )
    _print_urls(state)


@app.command()
def down() -> None:
    """Stop both servers and wait until they are gone; a pid that now belongs to another
    process is not signalled, only reported."""
    stack = _stack()
    typer.echo("stopped" if stack.down() else f"nothing was running in {stack.dir}")


@app.command()
def status() -> None:
    """Say what runs where, who leads the KRaft quorum and which partitions are
    under-replicated; exit 1 when nothing runs."""
    stack = _stack()
    state = stack.status()
    if state is None:
        typer.echo(f"not running (stack directory {stack.dir})")
        raise typer.Exit(1)
    for node in state.nodes:
        running = "running" if state.owns(node.pid) else "DOWN"
        typer.echo(f"kafka node {node.node_id}: {running} (pid {node.pid}, {node.bootstrap})")
    typer.echo(
        f"redis: {'running' if state.owns(state.redis_pid) else 'DOWN'} (pid {state.redis_pid})"
    )
    _print_cluster(state)
    _print_urls(state)


def _print_cluster(state: local.StackState) -> None:
    """The quorum's leader and the under-replicated partitions, as the cluster tells them."""
    try:
        with admin(KafkaSettings(bootstrap=state.kafka_bootstrap), timeout_s=5.0) as client:
            quorum = client.quorum()
            lagging = client.under_replicated()
    except (MessagingError, StackError) as exc:
        typer.echo(f"cluster: no answer ({exc})")
        return
    leader = quorum.leader if quorum.leader >= 0 else "none (election in progress)"
    typer.echo(f"controller leader: node {leader} (epoch {quorum.epoch})")
    typer.echo(f"under-replicated partitions: {len(lagging)}")
    for p in lagging:
        typer.echo(
            f"  {p.topic}-{p.partition}: leader {p.leader}, "
            f"replicas {list(p.replicas)}, in sync {list(p.isr)}"
        )


@app.command()
def node(
    action: Literal["stop", "kill", "start"] = typer.Argument(
        ..., help="stop (SIGTERM), kill (SIGKILL) or start one Kafka node"
    ),
    node_id: int = typer.Argument(..., help="the node's id (1, 2 or 3)"),
) -> None:
    """Stop, kill or start one Kafka node of the running stack (fault drills)."""
    stack = _stack()
    if action == "stop":
        stack.stop_node(node_id)
    elif action == "kill":
        stack.kill_node(node_id)
    else:
        stack.start_node(node_id)
    typer.echo(f"kafka node {node_id}: {'started' if action == 'start' else 'stopped'}")
