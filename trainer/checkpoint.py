"""Per-epoch training checkpoints: one safetensors file, written atomically, never pickled.

Tensors: ``model.*`` (weights after the last finished epoch), ``average.*`` (their moving
average, when training keeps one), ``best.*`` (the validated weights of the best epoch so
far) and ``optimizer.<param>.<name>`` (AdamW moments). Metadata ``tagstream`` holds the
JSON of :class:`Progress`, the optimiser's parameter groups, the encoder and a fingerprint
of the data and profile: resuming with other data or settings is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainer.errors import TrainerError

FILENAME = "checkpoint.safetensors"
KEY = "tagstream"


@dataclass
class Progress:
    """Where training stands after an epoch."""

    epoch: int = 0
    best_epoch: int = 0
    best_f1: float = -1.0
    bad_epochs: int = 0
    elapsed_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Checkpoint:
    """Everything needed to continue training exactly where it stopped."""

    fingerprint: str
    encoder_json: str
    progress: Progress
    model: dict[str, torch.Tensor]
    average: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def save(directory: Path, checkpoint: Checkpoint) -> Path:
    """Write ``directory/checkpoint.safetensors`` (via a temporary file and a rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in checkpoint.model.items()}
    tensors |= {f"average.{k}": v for k, v in checkpoint.average.items()}
    tensors |= {f"best.{k}": v for k, v in checkpoint.best.items()}
    moments, groups = _flatten_optimizer(checkpoint.optimizer)
    tensors |= moments
    document = {
        "fingerprint": checkpoint.fingerprint,
        "encoder": checkpoint.encoder_json,
        "progress": asdict(checkpoint.progress),
        "param_groups": groups,
    }
    target = directory / FILENAME
    partial = target.with_suffix(".partial")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        partial,
        metadata={KEY: json.dumps(document, sort_keys=True)},
    )
    partial.replace(target)
    return target


def load(directory: Path, fingerprint: str) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None when there is none; ``TrainerError`` when it
    belongs to other data or settings, or does not parse."""
    path = directory / FILENAME
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            document = json.loads(json.loads(handle.read(size))["__metadata__"][KEY])
    except Exception as exc:  # safetensors raises its own error type
        raise TrainerError(f"{path}: checkpoint does not parse: {exc}") from None
    if document["fingerprint"] != fingerprint:
        raise TrainerError(
            f"{path}: checkpoint is from other data or settings; "
            "remove it or train without --resume"
        )
    return Checkpoint(
        fingerprint=fingerprint,
        encoder_json=document["encoder"],
        progress=Progress(**document["progress"]),
        model=_prefixed(tensors, "model."),
        average=_prefixed(tensors, "average."),
        best=_prefixed(tensors, "best."),
        optimizer=_unflatten_optimizer(tensors, document["param_groups"]),
    )


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    tensors = {}
    for param, moments in state["state"].items():
        for name, value in moments.items():
            tensors[f"optimizer.{param}.{name}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param, name = key.split(".", 2)
            state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": groups}
