"""Offline training on synthetic data: a usable artifact, checkpoints, resume, batching."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import Artifact, sha256_hex
from model.config import NetworkShape
from model.encoder import UNK_ID, TextEncoder
from model.errors import ModelError
from model.inference import Classifier
from model.network import tfidf
from model.torch_runtime import pad
from model.toy import synthetic_articles
from schemas import LabelledArticle
from trainer import checkpoint
from trainer.data import (
    batch_plan,
    encode_split,
    epoch_batches,
    label_matrix,
    padded_tokens,
    with_title_copies,
)
from trainer.errors import TrainerError
from trainer.evaluate import evaluate_artifact
from trainer.linear_path import tfidf_rows
from trainer.profiles import TrainingProfile, profile
from trainer.train import RunOptions, drop_words, train_model

Splits = tuple[list[LabelledArticle], list[LabelledArticle], list[LabelledArticle]]
LABELS = ["earn", "acq", "crude", "grain"]
TINY = TrainingProfile(
    name="tiny",
    max_tokens=64,
    embedding_dim=16,
    hidden_size=16,
    batch_size=16,
    learning_rate=3e-2,
    max_epochs=5,
    patience=5,
    max_seconds=60,
    glove=False,
    word_dropout=0.05,
    title_copies=True,
    ema_decay=0.9,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> Splits:
    return (
        synthetic_articles(LABELS, 240, seed=1),
        synthetic_articles(LABELS, 60, seed=2),
        synthetic_articles(LABELS, 60, seed=3),
    )


@pytest.fixture(scope="module")
def trained(data: Splits) -> tuple[Artifact, dict[str, float]]:
    train, validation, _ = data
    return train_model(train, validation, LABELS, TINY, RunOptions(device="cpu"))


def test_training_learns_the_synthetic_labels(
    trained: tuple[Artifact, dict[str, float]], data: Splits
) -> None:
    artifact, metrics = trained
    assert metrics["validation_micro_f1"] > 0.8
    assert evaluate_artifact(artifact, data[2], LABELS)["micro_f1"] > 0.8


def test_artifact_records_thresholds_rule_and_training_summary(
    trained: tuple[Artifact, dict[str, float]],
) -> None:
    artifact, metrics = trained
    manifest = artifact.manifest
    assert manifest.labels == LABELS
    assert len(manifest.thresholds) == len(LABELS)
    assert all(0 < t < 1 for t in manifest.thresholds)
    assert "at_least_one_label" in manifest.hyperparameters
    assert manifest.training_data.train_documents == 240
    assert manifest.metrics["validation_micro_f1"] == metrics["validation_micro_f1"]
    data = artifact.to_bytes()
    again = Classifier.from_artifact(
        Artifact.from_bytes(data, sha256_hex(data)), version=1, device="cpu"
    )
    assert again.decide(again.scores(again.encode(["earn earnx earny profit"]))[0])


def test_resume_continues_from_the_checkpoint_to_the_same_weights(
    tmp_path: Path, data: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the second epoch's checkpoint, then --resume == four epochs in one go."""
    train, validation, _ = data
    straight, _ = train_model(train, validation, LABELS, TINY, RunOptions(device="cpu"))
    save = checkpoint.save

    def save_then_die_after_epoch_two(directory: Path, saved: checkpoint.Checkpoint) -> Path:
        path = save(directory, saved)
        if saved.progress.epoch == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(checkpoint, "save", save_then_die_after_epoch_two)
    options = RunOptions(device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_model(train, validation, LABELS, TINY, options)
    monkeypatch.setattr(checkpoint, "save", save)
    resumed, metrics = train_model(train, validation, LABELS, TINY, replace(options, resume=True))
    assert metrics["epochs"] == TINY.max_epochs
    for name, tensor in straight.state.items():
        assert np.array_equal(resumed.state[name], tensor), name
    assert resumed.manifest.thresholds == straight.manifest.thresholds


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path: Path, data: Splits) -> None:
    train, validation, _ = data
    train_model(
        train,
        validation,
        LABELS,
        TINY.with_overrides(max_epochs=1),
        RunOptions(device="cpu", checkpoint_dir=tmp_path),
    )
    assert (tmp_path / checkpoint.FILENAME).is_file()
    with pytest.raises(TrainerError, match="other data or settings"):
        train_model(
            train,
            validation,
            LABELS,
            TINY.with_overrides(hidden_size=8),
            RunOptions(device="cpu", checkpoint_dir=tmp_path, resume=True),
        )


def test_batches_cover_each_example_once_with_similar_lengths() -> None:
    lengths = list(np.random.default_rng(0).integers(1, 300, size=500))
    plan = batch_plan(lengths, 16, np.random.default_rng(1))
    assert sorted(i for b in plan for i in b) == list(range(500))
    shuffled = [list(range(i, min(i + 16, 500))) for i in range(0, 500, 16)]
    assert padded_tokens(plan, lengths) < 0.6 * padded_tokens(shuffled, lengths)


def test_ranks_split_the_batches_evenly_and_disjointly(data: Splits) -> None:
    train = data[0]
    encoder = TextEncoder.train([a.text for a in train], min_frequency=1)
    split = encode_split(encoder, train, LABELS)
    ranks = [list(epoch_batches(split, 16, seed=0, epoch=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    assert sum(len(b.lengths) for r in ranks for b in r) <= len(train)


def test_label_matrix_ignores_unknown_labels(data: Splits) -> None:
    matrix = label_matrix(data[0][:5], ["earn"])
    assert matrix.shape == (5, 1)
    assert set(np.unique(matrix)) <= {0.0, 1.0}


def test_unknown_profile_and_empty_data_are_trainer_errors() -> None:
    with pytest.raises(TrainerError):
        profile("huge")
    with pytest.raises(TrainerError):
        train_model([], [], LABELS, TINY)
    with pytest.raises(TrainerError):
        TINY.with_overrides(colour="red")


def test_word_dropout_replaces_only_real_tokens_by_unk() -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 8] * 50 + [0] * 20])
    dropped = drop_words(ids, 0.5)
    assert (dropped[:, 200:] == 0).all()
    changed = dropped[:, :200] != ids[:, :200]
    assert 50 < int(changed.sum()) < 150
    assert (dropped[:, :200][changed] == UNK_ID).all()
    assert torch.equal(drop_words(ids, 0.0), ids)


def test_title_copies_add_a_headline_only_article_per_article_with_a_body() -> None:
    articles = synthetic_articles(LABELS, 3, seed=4)
    articles.append(articles[0].model_copy(update={"id": "bodyless", "body": ""}))
    augmented = with_title_copies(articles)
    copies = augmented[len(articles) :]
    assert [c.id for c in copies] == [f"{a.id}#title" for a in articles[:3]]
    assert all(
        c.body == "" and c.title == a.title and c.labels == a.labels
        for c, a in zip(copies, articles, strict=False)
    )


def test_the_shipped_weights_are_the_moving_average(data: Splits) -> None:
    train, validation, _ = data
    settings = TINY.with_overrides(max_epochs=1, ema_decay=0.9)
    averaged, _ = train_model(train, validation, LABELS, settings, RunOptions(device="cpu"))
    plain, _ = train_model(
        train, validation, LABELS, settings.with_overrides(ema_decay=0.0), RunOptions(device="cpu")
    )
    assert not np.array_equal(averaged.state["head.weight"], plain.state["head.weight"])


def test_the_artifact_network_has_every_network_setting_of_the_profile(
    trained: tuple[Artifact, dict[str, float]],
) -> None:
    config = trained[0].config
    assert all(getattr(config, f.name) == getattr(TINY, f.name) for f in fields(NetworkShape))
    assert (config.vocab_size, config.n_labels) == (trained[0].encoder.vocab_size, len(LABELS))


def test_a_bad_network_setting_fails_when_the_profile_is_made() -> None:
    with pytest.raises(ModelError, match="hidden_size"):
        TINY.with_overrides(hidden_size=0)
    with pytest.raises(ModelError, match="pooling"):
        TINY.with_overrides(pooling="median")


def test_the_bag_of_words_path_is_fitted_on_training_idf(data: Splits) -> None:
    """Wide & deep: idf from the training split (0 for padding and unknown words), and the
    linear path fitted after the LSTM, weighted in when it helps, folded into the network.
    The LSTM here barely trains, so the linear path has to carry the labels."""
    train, validation, test = data
    settings = TINY.with_overrides(bag_of_words=True, max_epochs=1, learning_rate=1e-5)
    artifact, metrics = train_model(train, validation, LABELS, settings, RunOptions(device="cpu"))
    idf = artifact.state["idf"]
    assert idf[0] == 0 and idf[UNK_ID] == 0 and (idf[2:] >= 1).all()
    assert idf[2:].max() > idf[2:].min()  # rarer words weigh more
    assert artifact.manifest.hyperparameters["bag_of_words_weight"] > 0
    assert abs(artifact.state["wide.weight"]).max() > 0
    assert metrics["validation_micro_f1"] > 0.8
    assert evaluate_artifact(artifact, test, LABELS)["micro_f1"] > 0.8
    alone, _ = train_model(
        train, validation, LABELS, replace(settings, bag_of_words=False), RunOptions(device="cpu")
    )
    assert evaluate_artifact(alone, test, LABELS)["micro_f1"] < 0.8


def test_the_linear_path_features_are_the_networks_tfidf(data: Splits) -> None:
    encoder = TextEncoder.train((a.text for a in data[0]), vocab_size=500, max_tokens=64)
    sequences = encoder.encode([a.text for a in data[0][:20]])
    idf = torch.rand(encoder.vocab_size) * 3
    ids, lengths = pad(sequences)
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    expected = tfidf(ids, mask, idf).numpy()
    np.testing.assert_allclose(tfidf_rows(sequences, idf.numpy()).toarray(), expected, atol=1e-6)
