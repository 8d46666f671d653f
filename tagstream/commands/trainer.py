"""``tagstream trainer train|evaluate``: offline training and evaluation on Reuters-21578."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from common.logging import configure
from common.paths import cache_dir

app = typer.Typer(help="Train and evaluate the BiLSTM classifier.", no_args_is_help=True)


def default_artifact(profile_name: str) -> Path:
    """``~/.cache/tagstream/artifacts/<profile>.safetensors``."""
    return cache_dir() / "artifacts" / f"{profile_name}.safetensors"


@app.command()
def train(
    profile_name: str = typer.Option("fast", "--profile", help="fast (~2 min) or full."),
    output: Path | None = typer.Option(None, help="Artifact path [cache/artifacts/<profile>]."),
    checkpoint_dir: Path | None = typer.Option(
        None, help="Checkpoint every epoch here [cache/artifacts/<profile>.checkpoint]."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Change one profile setting, e.g. --set hidden_size=64 (repeatable)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train on the train split, tune thresholds on validation, write one artifact file.

    Under ``torchrun --nproc_per_node N`` it trains data-parallel; rank 0 writes the file.
    """
    import corpus  # noqa: PLC0415 - torch and the corpus load only for this command
    from trainer.profiles import profile  # noqa: PLC0415
    from trainer.train import RunOptions, train_model  # noqa: PLC0415

    configure()
    settings = profile(profile_name).with_overrides(**_parse_overrides(overrides))
    checkpoint_dir = checkpoint_dir or default_artifact(profile_name).with_suffix(".checkpoint")
    data = corpus.load()
    started = time.perf_counter()
    options = RunOptions(
        device=device,
        threads=threads,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    artifact, metrics = train_model(data.train, data.validation, data.labels, settings, options)
    if _rank() == 0:
        target = output or default_artifact(profile_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(artifact.to_bytes())
        typer.echo(
            f"wrote {target} ({target.stat().st_size} bytes) in "
            f"{time.perf_counter() - started:.0f} s; validation micro-F1 "
            f"{metrics['validation_micro_f1']:.4f}, macro-F1 "
            f"{metrics['validation_macro_f1']:.4f}"
        )


@app.command()
def evaluate(
    artifact_path: Path | None = typer.Option(
        None, "--artifact", help="Artifact [cache/artifacts/fast]."
    ),
    report_dir: Path = typer.Option(Path("reports"), help="Where evaluation.json/.png go."),
    baselines: bool = typer.Option(
        True,
        "--baselines/--no-baselines",
        help="Fit TF-IDF logistic regression and linear SVM too.",
    ),
    device: str = typer.Option("cpu", help="Device for the model."),
) -> None:
    """Test-split metrics of an artifact beside the TF-IDF baselines; JSON + PNG report."""
    import corpus  # noqa: PLC0415
    from model.artifact import Artifact  # noqa: PLC0415
    from trainer.evaluate import evaluation_report, write_report  # noqa: PLC0415

    configure()
    path = artifact_path or default_artifact("fast")
    if not path.is_file():
        raise typer.BadParameter(
            f"{path} does not exist; run `tagstream trainer train` first", param_hint="--artifact"
        )
    artifact = Artifact.from_bytes(path.read_bytes())
    data = corpus.load()
    report = evaluation_report(
        artifact,
        data.train,
        data.validation,
        data.test,
        data.labels,
        baselines=baselines,
        device=device,
    )
    json_path, png_path = write_report(report, report_dir)
    _print_table(report)
    typer.echo(f"wrote {json_path} and {png_path}")


def _print_table(report: dict[str, Any]) -> None:
    from trainer.evaluate import HEADLINE, systems  # noqa: PLC0415

    names = systems(report)
    table = Table(
        title=f"Reuters-21578 test split: {report['documents']} documents, "
        f"{report['labels']} labels"
    )
    table.add_column("metric")
    for name in names:
        table.add_column(name.replace("tfidf_", "tf-idf ").replace("_", " "), justify="right")
    for metric in HEADLINE:
        table.add_row(metric, *(f"{report[n]['metrics'][metric]:.4f}" for n in names))
    Console(width=max(Console().width, 100)).print(table)


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["hidden_size=64", "pooling=max"]`` -> ``{"hidden_size": 64, "pooling": "max"}``."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        try:
            parsed[key.strip()] = json.loads(raw)
        except ValueError:
            parsed[key.strip()] = raw
    return parsed


def _rank() -> int:
    import os  # noqa: PLC0415

    return int(os.environ.get("RANK", "0"))
