"""The wide & deep model's linear path: what it reports choosing is what the network computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from model.config import NetworkConfig, NetworkShape
from model.encoder import TextEncoder
from model.network import build_network
from model.torch_runtime import network_scores
from model.toy import synthetic_articles
from trainer import linear_path
from trainer.data import encode_split, with_title_copies

LABELS = ["earn", "acq", "crude", "grain"]
SHAPE = NetworkShape(embedding_dim=16, hidden_size=16, bag_of_words=True)
CPU = torch.device("cpu")


def _logits(scores: np.ndarray) -> np.ndarray:
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def test_each_label_takes_the_margin_weight_of_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frequent and rare labels get their own weight on the SVM's margins; the network's
    scores after the fold are the LSTM's logits plus each label's weight times its margin."""
    articles = with_title_copies(synthetic_articles(LABELS, 240, seed=1))
    encoder = TextEncoder.train((a.text for a in articles), vocab_size=500, max_tokens=64)
    train = encode_split(encoder, articles, LABELS)
    validation = encode_split(encoder, synthetic_articles(LABELS, 60, seed=2), LABELS)
    positives = train.targets.sum(axis=0)
    counts = np.sort(positives)
    assert counts[1] < counts[2]
    monkeypatch.setattr(linear_path, "RARE_BELOW", float(counts[1] + counts[2]) / 2)
    network = build_network(
        NetworkConfig.for_data(SHAPE, vocab_size=encoder.vocab_size, n_labels=len(LABELS)), seed=0
    )
    with torch.no_grad():
        network.idf.uniform_(1.0, 3.0)
    network.eval()
    lstm = network_scores(network, validation.sequences, device=CPU)  # the linear path is 0

    path = linear_path.fit_linear_path(network, train, validation, CPU)

    assert path.rare_labels == 2
    assert path.weight != path.rare_weight  # the data makes the two groups differ
    idf = network.idf.numpy()
    svm = OneVsRestClassifier(LinearSVC(C=path.c, max_iter=5000, random_state=0))
    svm.fit(linear_path.tfidf_rows(train.sequences, idf), train.targets.astype(np.int8))
    margins = svm.decision_function(linear_path.tfidf_rows(validation.sequences, idf))
    weights = np.where(positives < linear_path.RARE_BELOW, path.rare_weight, path.weight)
    expected = 1.0 / (1.0 + np.exp(-(_logits(lstm) + weights * margins)))
    folded = network_scores(network, validation.sequences, device=CPU)
    np.testing.assert_allclose(folded, expected, atol=1e-4)
