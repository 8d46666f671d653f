"""Polled records -> items: decode and validate each Article, encode the valid ones.

A message that cannot be predicted becomes a :class:`~worker.items.Rejection` with the
:data:`schemas.ErrorKind` that says why (``decode``: not JSON or not UTF-8; ``validation``:
JSON that is not an Article, or a value over ``max_message_bytes``, refused before it is
parsed; ``encoding``: the text encoder gives no tokens). Nothing here raises on input.

A reason never quotes the input: it names the failing field by its path in the
:class:`~schemas.Article` schema, and a key the schema does not know (an unexpected field,
a metadata key) by its place only. An exception raised on input is named by its type.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from schemas import Article, ErrorKind, decode_article
from worker.items import Item, Origin, Polled, Rejection

MAX_ERROR_CHARS = 4096
MAX_ERRORS_LISTED = 5
UNEXPECTED = "(unexpected field)"
KEY = "(key)"


class Encoder(Protocol):
    """The part of a model that turns texts into token ids; never raises on a text."""

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...


def describe(exc: ValidationError, schema: type[BaseModel] = Article) -> tuple[ErrorKind, str]:
    """The kind of a validation failure and a one-line reason that never quotes the input."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    kind: ErrorKind = "decode" if any(e["type"] == "json_invalid" for e in errors) else "validation"
    parts = [f"{field_path(e['loc'], schema)}: {e['msg']}" for e in errors[:MAX_ERRORS_LISTED]]
    if len(errors) > MAX_ERRORS_LISTED:
        parts.append(f"and {len(errors) - MAX_ERRORS_LISTED} more")
    return kind, "; ".join(parts)[:MAX_ERROR_CHARS]


def field_path(loc: tuple[int | str, ...], schema: type[BaseModel] = Article) -> str:
    """``loc`` as a dotted path of ``schema``'s own names: field names, list positions and
    union members; a key that comes from the input is shown by its place, never spelled."""
    names = []
    annotation: Any = schema
    for part in loc:
        name, annotation = _step(annotation, part)
        names.append(name)
    return ".".join(names) or "message"


def _step(annotation: Any, part: int | str) -> tuple[str, Any]:
    """The name of one step into ``annotation`` and the annotation it leads to."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return (UNEXPECTED, None) if field is None else (str(part), field.annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _step(args[0], part)
    if origin is dict:
        return KEY, args[1]
    if origin in (list, tuple, set, frozenset) and isinstance(part, int):
        return str(part), args[0] if args else None
    if origin in (typing.Union, types.UnionType):
        member = next((a for a in args if getattr(a, "__name__", None) == part), None)
        return (str(part), member) if member is not None else ("(member)", None)
    return KEY, None


def decode(value: bytes | None, max_body_bytes: int, max_message_bytes: int) -> Article | Rejection:
    """One message value -> an Article with some text, or the reason it is not one.

    A value over ``max_message_bytes`` is refused by its length, before it is parsed.
    """
    if value is None:
        return Rejection("decode", "message has no value")
    if len(value) > max_message_bytes:
        return Rejection(
            "validation",
            f"message is {len(value)} bytes, over the limit of {max_message_bytes}: not parsed",
        )
    try:
        article = decode_article(value, max_body_bytes=max_body_bytes)
        if not article.text.strip():
            return Rejection("validation", "title and body are empty: nothing to classify")
        return article
    except ValidationError as exc:
        kind, message = describe(exc)
        return Rejection(kind, message)
    except (ValueError, RecursionError) as exc:  # defensive: the parser reports these itself
        return Rejection("decode", f"the parser failed: {type(exc).__name__}")


def encode(articles: Sequence[Article], encoder: Encoder) -> list[list[int] | str]:
    """Token ids per article in order, or the reason an article has none."""
    if not articles:
        return []
    try:
        encoded = encoder.encode([a.text for a in articles])
        if len(encoded) != len(articles):
            raise ValueError(f"encoder returned {len(encoded)} sequences for {len(articles)}")
    except Exception as exc:  # isolate the one text the encoder chokes on, keep the rest
        if len(articles) == 1:
            return [f"the encoder failed: {type(exc).__name__}"]
        return [ids for a in articles for ids in encode([a], encoder)]
    return [list(ids) if len(ids) else "the text encodes to no tokens" for ids in encoded]


def origin(polled: Polled) -> Origin:
    record = polled.record
    return Origin(
        record.tp, record.offset, polled.epoch, record.key, record.timestamp_ms, polled.received_at
    )


def to_items(
    chunk: Sequence[Polled], encoder: Encoder, max_body_bytes: int, *, max_message_bytes: int
) -> list[Item]:
    """Decode, validate and encode a chunk; one item per record, in order."""
    decoded = [decode(p.record.value, max_body_bytes, max_message_bytes) for p in chunk]
    articles = [d for d in decoded if isinstance(d, Article)]
    token_ids = iter(encode(articles, encoder))
    items = []
    for polled, result in zip(chunk, decoded, strict=True):
        payload = polled.record.value or b""
        if isinstance(result, Rejection):
            items.append(Item(origin(polled), payload, rejection=result))
            continue
        ids = next(token_ids)
        if isinstance(ids, str):
            items.append(Item(origin(polled), payload, rejection=Rejection("encoding", ids)))
        else:
            items.append(Item(origin(polled), payload, article=result, token_ids=tuple(ids)))
    return items
