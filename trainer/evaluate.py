"""Evaluation with scikit-learn: a JSON report, a PNG figure, baselines side by side.

:func:`evaluate_artifact` is what the trainer service calls to compare a candidate with the
production model on a holdout; :func:`evaluation_report` adds the TF-IDF baselines and the
per-label view that ``tagstream trainer evaluate`` writes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    hamming_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from common.metrics import macro_f1, micro_f1, per_label_f1
from model.artifact import Artifact
from model.inference import Classifier, decide
from schemas import LabelledArticle
from trainer.baselines import fit_baselines
from trainer.data import label_matrix

HEADLINE = (
    "micro_f1",
    "macro_f1",
    "micro_precision",
    "micro_recall",
    "macro_precision",
    "macro_recall",
    "hamming_loss",
    "subset_accuracy",
    "micro_roc_auc",
)


def model_scores(
    artifact: Artifact,
    articles: Sequence[LabelledArticle],
    labels: Sequence[str],
    *,
    device: str = "cpu",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Scores and decisions of ``artifact`` over ``labels`` (columns of labels the artifact
    lacks are 0 and never chosen)."""
    classifier = Classifier.from_artifact(
        artifact, version=artifact.manifest.version or 1, device=device
    )
    raw = classifier.scores(classifier.encode([a.text for a in articles]))
    chosen = decide(raw, classifier.thresholds, classifier.at_least_one)
    scores = np.zeros((len(articles), len(labels)), dtype=np.float32)
    predicted = np.zeros((len(articles), len(labels)), dtype=bool)
    column = {label: j for j, label in enumerate(classifier.labels)}
    for j, label in enumerate(labels):
        if label in column:
            scores[:, j], predicted[:, j] = raw[:, column[label]], chosen[:, column[label]]
    return scores, predicted


def metrics(
    truth: npt.NDArray[np.bool_], predicted: npt.NDArray[np.bool_], scores: npt.NDArray[np.float32]
) -> dict[str, float]:
    """The headline multi-label metrics (macro over labels that occur in ``truth``)."""
    present = np.flatnonzero(truth.sum(axis=0) > 0)
    t, p = truth[:, present], predicted[:, present]
    return {
        "micro_f1": micro_f1(truth, predicted),
        "macro_f1": macro_f1(truth, predicted),
        "micro_precision": float(
            precision_score(truth, predicted, average="micro", zero_division=0)
        ),
        "micro_recall": float(recall_score(truth, predicted, average="micro", zero_division=0)),
        "macro_precision": float(precision_score(t, p, average="macro", zero_division=0)),
        "macro_recall": float(recall_score(t, p, average="macro", zero_division=0)),
        "hamming_loss": float(hamming_loss(truth, predicted)),
        "subset_accuracy": float((truth == predicted).all(axis=1).mean()),
        "micro_roc_auc": float(roc_auc_score(t, scores[:, present], average="micro")),
    }


def evaluate_artifact(
    artifact: Artifact,
    articles: Sequence[LabelledArticle],
    labels: Sequence[str],
    *,
    device: str = "cpu",
) -> dict[str, float]:
    """Headline metrics of ``artifact`` on ``articles`` (gold labels restricted to ``labels``)."""
    scores, predicted = model_scores(artifact, articles, labels, device=device)
    return metrics(label_matrix(articles, labels) > 0.5, predicted, scores) | {
        "documents": float(len(articles))
    }


def per_label(
    truth: npt.NDArray[np.bool_],
    predicted: npt.NDArray[np.bool_],
    labels: Sequence[str],
    train_counts: Counter[str],
) -> list[dict[str, Any]]:
    """F1, support and training frequency of each label."""
    f1 = per_label_f1(truth, predicted)
    return [
        {
            "label": label,
            "f1": float(f1[j]),
            "support": int(truth[:, j].sum()),
            "train_frequency": int(train_counts[label]),
        }
        for j, label in enumerate(labels)
    ]


def evaluation_report(
    artifact: Artifact,
    train: Sequence[LabelledArticle],
    validation: Sequence[LabelledArticle],
    test: Sequence[LabelledArticle],
    labels: Sequence[str],
    *,
    baselines: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """The model on ``test`` beside TF-IDF baselines fitted on train and tuned on validation."""
    truth = label_matrix(test, labels) > 0.5
    counts = Counter(label for article in train for label in article.labels)
    scores, predicted = model_scores(artifact, test, labels, device=device)
    report: dict[str, Any] = {
        "documents": len(test),
        "labels": len(labels),
        "model": {
            "metrics": metrics(truth, predicted, scores),
            "per_label": per_label(truth, predicted, labels, counts),
            "manifest_metrics": artifact.manifest.metrics,
            "hyperparameters": artifact.manifest.hyperparameters,
        },
    }
    if baselines:
        for baseline in fit_baselines(train, validation, test, labels):
            report[baseline.name] = {
                "metrics": metrics(truth, baseline.predicted, baseline.scores),
                "per_label": per_label(truth, baseline.predicted, labels, counts),
                "settings": baseline.settings,
                "seconds": round(baseline.seconds, 1),
            }
    return report


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``evaluation.json`` and ``evaluation.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / "evaluation.json", directory / "evaluation.png"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    plot(report, png_path)
    return json_path, png_path


def systems(report: dict[str, Any]) -> list[str]:
    """Names of the evaluated systems in the report, the model first."""
    return [k for k, v in report.items() if isinstance(v, dict) and "metrics" in v]


def plot(report: dict[str, Any], path: Path) -> None:
    """Left: headline metrics per system. Right: per-label F1 against training frequency."""
    import matplotlib  # noqa: PLC0415 - a heavy import only the report needs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = systems(report)
    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(13, 5))
    shown = ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "subset_accuracy")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [report[name]["metrics"][m] for m in shown]
        bars.bar(np.arange(len(shown)) + i * width, values, width, label=name)
        rows = report[name]["per_label"]
        scatter.scatter(
            [max(r["train_frequency"], 1) for r in rows],
            [r["f1"] for r in rows],
            s=14,
            alpha=0.7,
            label=name,
        )
    bars.set_xticks(np.arange(len(shown)) + width * (len(names) - 1) / 2, shown, rotation=20)
    bars.set_ylim(0, 1)
    bars.set_title(f"test split, {report['documents']} documents")
    bars.legend(fontsize=8)
    scatter.set_xscale("log")
    scatter.set_xlabel("training documents with the label")
    scatter.set_ylabel("test F1")
    scatter.set_title("per-label F1 against label frequency")
    scatter.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
