"""structlog set-up: JSON lines when stderr is not a terminal, a console renderer when it is.

Per-batch context (``partition``, ``offset``, ``batch_id``, ``model_version``) is bound with
``structlog.contextvars`` by the code that owns it; call :func:`configure` once per process.
"""

from __future__ import annotations

import logging
import sys
import threading

import structlog


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    """Route structlog output to stderr at ``level``; JSON unless stderr is a terminal."""
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_LineLogger,
        cache_logger_on_first_use=True,
    )


class _LineLogger:
    """Writes each record and its newline to whatever ``sys.stderr`` is now, in one write.

    ``print`` writes the newline separately; with ``PYTHONUNBUFFERED=1`` each part is its own
    system call, and processes that share one stderr (a supervisor's workers) interleave
    them, putting two records on one line. A single write of a line under the pipe buffer
    size is atomic. Following the current ``sys.stderr`` rather than the one at configure time
    keeps a cached logger writing after its first stream was replaced and closed (a test
    runner's capture, a daemon that redirected its output).
    """

    _lock = threading.Lock()

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        line = message + "\n"
        with self._lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound with the component ``name``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
