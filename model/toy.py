"""Small, valid, untrained models and synthetic labelled articles, for tests and demos.

:func:`toy_artifact` builds in a few milliseconds: a vocabulary learnt from a handful of
synthetic sentences and a tiny BiLSTM with seeded random weights. Its scores mean nothing, but
it exercises every code path the real model does (encoder, artifact bytes, inference).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

from model.artifact import Artifact
from model.config import NetworkConfig
from model.encoder import TextEncoder
from model.network import build_network
from schemas import LabelledArticle, ModelManifest, TrainingDataSummary

CREATED_AT = datetime(2024, 1, 1, tzinfo=UTC)
FILLER = (
    "the",
    "company",
    "said",
    "it",
    "would",
    "in",
    "a",
    "statement",
    "on",
    "monday",
    "shares",
    "market",
    "year",
    "of",
    "and",
    "to",
    "for",
    "analysts",
    "expected",
    "pct",
)


def label_words(label: str) -> list[str]:
    """Words that signal ``label`` in synthetic articles."""
    return [label, f"{label}x", f"{label}y"]


def synthetic_articles(
    labels: Sequence[str],
    count: int,
    *,
    seed: int = 0,
    max_words: int = 60,
    prefix: str = "synthetic",
) -> list[LabelledArticle]:
    """``count`` articles with 1-2 labels each whose words appear among filler text."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    articles = []
    for index in range(count):
        chosen = rng.sample(list(labels), k=min(len(labels), rng.choice((1, 1, 2))))
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, max_words))]
        for label in chosen:
            for _ in range(rng.randint(1, 3)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(label_words(label)))
        articles.append(
            LabelledArticle(
                id=f"{prefix}-{seed}-{index}",
                title=" ".join(words[:6]),
                body=" ".join(words[6:]),
                labels=sorted(chosen),
            )
        )
    return articles


def toy_artifact(labels: Sequence[str] = ("earn", "acq", "crude"), *, seed: int = 0) -> Artifact:
    """A tiny untrained-but-valid artifact over ``labels`` (thresholds 0.5)."""
    texts = [article.text for article in synthetic_articles(labels, 40, seed=seed)]
    encoder = TextEncoder.train(texts, vocab_size=500, min_frequency=1, max_tokens=512)
    config = NetworkConfig(
        vocab_size=encoder.vocab_size,
        n_labels=len(labels),
        embedding_dim=16,
        hidden_size=16,
        embedding_dropout=0.0,
        head_dropout=0.0,
    )
    network = build_network(config, seed=seed)
    manifest = ModelManifest(
        created_at=CREATED_AT,
        labels=list(labels),
        thresholds=[0.5] * len(labels),
        encoder_digest=encoder.digest,
        hyperparameters={"profile": "toy", "seed": seed},
        training_data=TrainingDataSummary(train_documents=0, validation_documents=0, source="toy"),
    )
    state = {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}
    return Artifact(manifest=manifest, encoder=encoder, config=config, state=state)
