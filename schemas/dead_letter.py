"""Dead letters (``articles.dlq``): a message the worker could not predict, and why."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Contract, SourceRef

ErrorKind = Literal["decode", "validation", "encoding", "inference", "internal"]
"""``decode``: not UTF-8 JSON; ``validation``: JSON that is not an Article; ``encoding``:
the text encoder refused it; ``inference``: the model failed on it alone; ``internal``: a bug."""


class DeadLetter(Contract):
    """The original bytes (base64 in JSON), the reason, and where they came from."""

    schema_version: Literal[1] = 1
    payload: bytes
    key: bytes | None = None
    error_kind: ErrorKind
    error_message: str = Field(max_length=4096)
    source: SourceRef
    worker_id: str = Field(min_length=1)
    failed_at: datetime
