"""Errors of the streaming worker.

    common.errors.TagstreamError
    └── WorkerError            the streaming loop
        ├── PublishError       the broker did not acknowledge a result (retriable: the
        │                      partition is rewound to its last committed offset)
        ├── FencedError        another instance took over this worker's transactional id or
        │                      group membership (fatal: this process must stop)
        └── NoModelError       no model could be loaded at start (retriable)

Bad input is never an exception here: it becomes a ``schemas.DeadLetter`` value.
"""

from __future__ import annotations

from common.errors import TagstreamError


class WorkerError(TagstreamError):
    """The streaming loop could not go on as asked."""


class PublishError(WorkerError):
    """A prediction or dead letter was not acknowledged by the broker."""

    retriable = True


class FencedError(WorkerError):
    """A newer instance owns this worker's transactional id or group membership."""


class NoModelError(WorkerError):
    """No model is available to serve (registry empty, unreachable, or artifact refused)."""

    retriable = True
