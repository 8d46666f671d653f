"""Descriptive statistics of the corpus splits, for ``tagstream data stats``."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from corpus.reuters import Corpus
from schemas import LabelledArticle

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class SplitStats:
    """Counts and distributions of one split."""

    name: str
    documents: int
    title_only: int
    labels_per_doc_mean: float
    labels_per_doc_max: int
    tokens_p50: float
    tokens_p95: float
    tokens_max: int


def word_count(article: LabelledArticle) -> int:
    """Words and punctuation marks of title and body (a tokenizer-independent length)."""
    return len(_WORD.findall(article.text))


def split_stats(name: str, articles: list[LabelledArticle]) -> SplitStats:
    lengths = np.array([word_count(a) for a in articles] or [0])
    per_doc = np.array([len(a.labels) for a in articles] or [0])
    return SplitStats(
        name=name,
        documents=len(articles),
        title_only=sum(1 for a in articles if not a.body),
        labels_per_doc_mean=float(per_doc.mean()),
        labels_per_doc_max=int(per_doc.max()),
        tokens_p50=float(np.percentile(lengths, 50)),
        tokens_p95=float(np.percentile(lengths, 95)),
        tokens_max=int(lengths.max()),
    )


def corpus_stats(corpus: Corpus) -> list[SplitStats]:
    return [split_stats(name, getattr(corpus, name)) for name in ("train", "validation", "test")]


def label_frequencies(corpus: Corpus) -> Counter[str]:
    """How many train+validation documents carry each label."""
    return Counter(label for a in corpus.train + corpus.validation for label in a.labels)
