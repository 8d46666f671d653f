"""``tagstream monitor run``: live quality per version, drift, automatic rollback (``monitor/``)."""

from __future__ import annotations

import signal
from types import FrameType

import typer

from common.settings import KafkaSettings, RedisSettings, load
from model.settings import RegistrySettings
from monitor.service import Monitor
from monitor.settings import MonitorSettings

app = typer.Typer(
    help="Join labelled feedback with predictions; live figures per version; roll back.",
    no_args_is_help=True,
)


@app.command()
def run() -> None:
    """Run until SIGTERM/SIGINT. Settings: TAGSTREAM_MONITOR_*; metrics on /metrics."""
    monitor = Monitor(
        load(MonitorSettings), load(KafkaSettings), load(RedisSettings), load(RegistrySettings)
    )

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        monitor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    monitor.run()
