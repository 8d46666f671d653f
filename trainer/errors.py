"""Errors of the training service.

TagstreamError
└── TrainerError            a training cycle failed
    ├── StoreError          the durable example store could not be read or written
    └── LockLostError            another trainer holds (or took over) the training lock
"""

from __future__ import annotations

from common.errors import TagstreamError


class TrainerError(TagstreamError):
    """A training cycle failed."""


class StoreError(TrainerError):
    """The example store on disk could not be read or written."""


class LockLostError(TrainerError):
    """The training lock is held by another trainer, or expired while this one trained."""

    retriable = True
