"""Articles in (``articles``) and labelled feedback (``articles.labelled``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from schemas.base import DEFAULT_MAX_BODY_BYTES, MAX_TITLE_CHARS, Contract, NonEmptyId

MetadataValue = str | int | float | bool | None
MAX_METADATA_ITEMS = 64
MAX_LABELS = 512

Label = Annotated[str, Field(min_length=1, max_length=128)]


class Article(Contract):
    """One news article to classify, keyed on Kafka by its ``id``.

    ``body`` is bounded in UTF-8 bytes; the bound comes from the validation context key
    ``max_body_bytes`` (default :data:`DEFAULT_MAX_BODY_BYTES`), so each decoder applies
    its own configured limit.
    """

    schema_version: Literal[1] = 1
    id: NonEmptyId
    title: str = Field(default="", max_length=MAX_TITLE_CHARS)
    body: str = ""
    source: str = Field(default="unknown", min_length=1, max_length=256)
    published_at: datetime | None = None
    language: str | None = Field(default=None, min_length=2, max_length=16)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=MAX_METADATA_ITEMS)

    @field_validator("body")
    @classmethod
    def _body_within_limit(cls, body: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        size = len(body.encode("utf-8", errors="surrogatepass"))
        if size > limit:
            raise ValueError(f"body is {size} bytes, over the limit of {limit}")
        return body

    @field_validator("title", "body")
    @classmethod
    def _valid_unicode(cls, text: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text is not valid Unicode: {exc.reason}") from None
        return text

    @property
    def text(self) -> str:
        """Title and body as the model reads them."""
        return f"{self.title}\n{self.body}" if self.title else self.body


class LabelledArticle(Article):
    """An article with its gold labels: training feedback for the trainer."""

    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)


def decode_article(payload: bytes, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Article:
    """Parse and validate one JSON payload; raises ``pydantic.ValidationError``."""
    return Article.model_validate_json(payload, context={"max_body_bytes": max_body_bytes})


def decode_labelled_article(
    payload: bytes, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> LabelledArticle:
    """Parse and validate one labelled JSON payload; raises ``pydantic.ValidationError``."""
    return LabelledArticle.model_validate_json(payload, context={"max_body_bytes": max_body_bytes})
