"""JSON Schema files for the contracts, written to ``schemas/json/`` and checked in tests."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas import Article, DeadLetter, LabelledArticle, ModelManifest, Prediction

SCHEMA_DIR = Path(__file__).parent / "json"
CONTRACTS: dict[str, type[BaseModel]] = {
    "article": Article,
    "labelled_article": LabelledArticle,
    "prediction": Prediction,
    "dead_letter": DeadLetter,
    "model_manifest": ModelManifest,
}


def render() -> dict[str, str]:
    """File name -> JSON Schema text for every contract."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for name, model in CONTRACTS.items()
    }


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the code generates."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
