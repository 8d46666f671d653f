"""``python -m worker``: one worker process, configured from the environment.

A SIGTERM or SIGINT that arrives while the process is still importing (torch alone takes
seconds) ends it with status 0, as a stop would once it runs: nothing has been read or
committed yet. Without this, the default action killed it (status -15), which a process
manager scaling down at that moment reads as a crash. :class:`worker.app.Worker` installs
its own handlers (drain, then exit) as the first step of its start.
"""

import signal
import sys


def _stop_before_start(signum: int, _frame: object) -> None:
    print(f"{signal.Signals(signum).name} before the worker started; exiting", file=sys.stderr)
    sys.exit(0)


for _signum in (signal.SIGINT, signal.SIGTERM):  # SIGTERM last: caught means both are
    signal.signal(_signum, _stop_before_start)

from common.errors import TagstreamError  # noqa: E402 - after the handlers, on purpose
from worker.app import main  # noqa: E402

try:
    sys.exit(main())
except TagstreamError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
