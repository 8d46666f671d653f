"""Errors of the streaming worker.

    common.errors.TagstreamError
    └── WorkerError            the streaming loop
        ├── FencedError        another instance took over this worker's transactional id or
        │                      group membership (fatal: this process must stop)
        ├── NoModelError       no model could be loaded at start (retriable)
        └── delivery.TransactionStuckError  a transaction's commit got no answer in time

Kafka's own failures are :mod:`messaging.errors` kinds; a result the broker does not
acknowledge is not an exception here either: its partition is rewound.

Bad input is never an exception here: it becomes a ``schemas.DeadLetter`` value.
"""

from __future__ import annotations

from common.errors import TagstreamError


class WorkerError(TagstreamError):
    """The streaming loop could not go on as asked."""


class FencedError(WorkerError):
    """A newer instance owns this worker's transactional id or group membership."""


class NoModelError(WorkerError):
    """No model is available to serve (registry empty, unreachable, or artifact refused)."""

    retriable = True
