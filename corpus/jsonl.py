"""Articles from JSON-lines files: one LabelledArticle per line (``labels`` may be omitted)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from common.errors import DataError
from schemas import LabelledArticle


def read_jsonl(path: Path) -> Iterator[LabelledArticle]:
    """Each non-blank line as an article; a bad line raises DataError naming its number."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield LabelledArticle.model_validate_json(line)
            except ValidationError as exc:
                raise DataError(f"{path}:{number}: not an article: {exc}") from None


def write_jsonl(path: Path, articles: Iterable[LabelledArticle]) -> int:
    """Write articles one per line; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for article in articles:
            out.write(article.model_dump_json() + "\n")
            count += 1
    return count
