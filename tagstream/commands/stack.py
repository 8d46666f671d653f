"""``tagstream stack install|up|down|status``: the local Apache Kafka + Redis pair."""

from __future__ import annotations

import typer

from common.settings import load
from tagstream import stack as local

app = typer.Typer(
    help="Run a local Apache Kafka (KRaft) and Redis in the background.", no_args_is_help=True
)


def _stack() -> local.LocalStack:
    return local.LocalStack(load(local.StackSettings))


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
def up() -> None:
    """Start Kafka and Redis (or report the running pair); the last two lines are the URLs."""
    stack = _stack()
    state, started = stack.up()
    typer.echo(
        f"{'started' if started else 'already running'}: kafka pid {state.kafka_pid}, "
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
    """Say what runs where; exit 1 when nothing runs."""
    stack = _stack()
    state = stack.status()
    if state is None:
        typer.echo(f"not running (stack directory {stack.dir})")
        raise typer.Exit(1)
    for name, pid in state.pids.items():
        typer.echo(f"{name}: {'running' if state.owns(pid) else 'DOWN'} (pid {pid})")
    _print_urls(state)
