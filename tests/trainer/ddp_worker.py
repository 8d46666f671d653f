"""One rank of the two-process DDP test (run by torchrun); writes its final weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.numpy import save_file

from model.toy import synthetic_articles
from trainer.profiles import TrainingProfile
from trainer.train import RunOptions, train_model

LABELS = ["earn", "acq", "crude"]
PROFILE = TrainingProfile(
    name="ddp-test",
    max_tokens=48,
    embedding_dim=8,
    hidden_size=8,
    batch_size=8,
    max_epochs=2,
    patience=2,
    glove=False,
)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    train = synthetic_articles(LABELS, 96, seed=1)
    validation = synthetic_articles(LABELS, 24, seed=2)
    artifact, metrics = train_model(train, validation, LABELS, PROFILE, RunOptions(device="cpu"))
    rank = os.environ["RANK"]
    save_file(
        artifact.state,
        out / f"rank{rank}.safetensors",
        metadata={"world_size": os.environ["WORLD_SIZE"], "epochs": str(metrics["epochs"])},
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
