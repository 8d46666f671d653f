"""``tagstream trainer train|evaluate`` on a small synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import corpus
from corpus import Corpus
from model.artifact import Artifact
from model.toy import synthetic_articles
from tagstream.commands.trainer import app

LABELS = ["earn", "acq", "crude"]


@pytest.fixture
def small_corpus(monkeypatch: pytest.MonkeyPatch) -> Corpus:
    torch.set_num_threads(1)
    data = Corpus(
        train=synthetic_articles(LABELS, 120, seed=1),
        validation=synthetic_articles(LABELS, 40, seed=2),
        test=synthetic_articles(LABELS, 40, seed=3),
        labels=LABELS,
    )
    monkeypatch.setattr(corpus, "load", lambda *args, **kwargs: data)
    return data


def test_train_writes_an_artifact_and_evaluate_writes_json_and_png(
    small_corpus: Corpus, tmp_path: Path
) -> None:
    runner = CliRunner()
    artifact_path = tmp_path / "model.safetensors"
    trained = runner.invoke(
        app,
        [
            "train",
            "--profile",
            "fast",
            "--output",
            str(artifact_path),
            "--device",
            "cpu",
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
            "--no-progress",
            "--set",
            "max_epochs=2",
            "--set",
            "hidden_size=8",
            "--set",
            "embedding_dim=8",
            "--set",
            "glove=false",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "validation micro-F1" in trained.output
    artifact = Artifact.from_bytes(artifact_path.read_bytes())
    assert artifact.config.hidden_size == 8
    assert artifact.manifest.hyperparameters["max_epochs"] == 2

    evaluated = runner.invoke(
        app,
        ["evaluate", "--artifact", str(artifact_path), "--report-dir", str(tmp_path / "report")],
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert set(report) >= {"model", "tfidf_logistic_regression", "tfidf_linear_svm"}
    assert {"micro_f1", "macro_f1", "hamming_loss", "subset_accuracy", "micro_roc_auc"} <= set(
        report["model"]["metrics"]
    )
    assert (tmp_path / "report" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tf-idf linear svm" in evaluated.output


def test_a_malformed_override_is_refused(small_corpus: Corpus) -> None:
    result = CliRunner().invoke(app, ["train", "--set", "nonsense"])
    assert result.exit_code != 0
