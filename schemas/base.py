"""Pieces shared by the message schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

DEFAULT_MAX_BODY_BYTES = 256 * 1024
"""Default bound on an article body in UTF-8 bytes; a decoder may pass its own."""

MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 4096

NonEmptyId = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_ID_CHARS, strip_whitespace=True, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
"""An identifier: 1..256 characters after stripping, no control characters."""


class Contract(BaseModel):
    """Base of every wire model: strict about unknown fields, immutable once built."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )


class SourceRef(Contract):
    """Where a message was read: its Kafka coordinates."""

    topic: str = Field(min_length=1)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
