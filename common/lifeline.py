"""Child processes that never outlive the process that started them.

``Popen(..., preexec_fn=end_with_this_process())`` asks Linux (``prctl(PR_SET_PDEATHSIG)``,
which survives ``exec``) to send the child SIGTERM when its parent dies, however it dies:
SIGKILL included, when no handler and no ``finally`` of the parent runs. Two details:

- the signal fires when the parent *thread* that forked the child ends, not the process, so
  children are started from the main thread only (which lives as long as the process);
- a parent that dies between ``fork`` and the ``prctl`` call would never signal: the child
  compares ``getppid()`` with the parent's pid afterwards and exits at once when the parent
  is already gone (it was handed to another reaper).

``preexec_fn`` runs Python in the child between ``fork`` and ``exec``, which is unsafe in a
process with threads when that code takes a lock another thread held at the fork. This one
takes none: one foreign call looked up beforehand, ``getppid`` and ``_exit``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
ORPHANED_EXIT_CODE = 143
"""What a child whose parent was already gone exits with (as if SIGTERM had come)."""


def end_with_this_process(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that ends the child with ``sig`` when this process dies."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "children tied to their parent must be started from the main thread: "
            "PR_SET_PDEATHSIG fires when the forking thread ends"
        )
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_the_child() -> None:
        if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(ORPHANED_EXIT_CODE)

    return in_the_child
