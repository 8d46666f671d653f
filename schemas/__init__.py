"""Wire and disk contracts: what travels on Kafka and what a model artifact declares.

Every model carries a ``schema_version``. Top-level unknown fields are *rejected*
(``extra="forbid"``): a producer that adds a field must bump the schema version, so a
typo never passes silently. Free-form data belongs in ``Article.metadata``.
"""

from schemas.article import Article, LabelledArticle, decode_article, decode_labelled_article
from schemas.base import DEFAULT_MAX_BODY_BYTES, SourceRef
from schemas.dead_letter import DeadLetter, ErrorKind
from schemas.manifest import ModelManifest, TrainingDataSummary
from schemas.prediction import LabelScore, Prediction

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Article",
    "DeadLetter",
    "ErrorKind",
    "LabelScore",
    "LabelledArticle",
    "ModelManifest",
    "Prediction",
    "SourceRef",
    "TrainingDataSummary",
    "decode_article",
    "decode_labelled_article",
]
