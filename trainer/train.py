"""Offline training: labelled articles in, a complete :class:`model.artifact.Artifact` out.

One run: learn the vocabulary from the training split; build the BiLSTM (embeddings from
GloVe when available); train with AdamW, gradient clipping and length-bucketed batches;
after each epoch score the validation split, keep the best epoch by micro-F1 and write a
checkpoint; stop early after ``patience`` epochs without improvement, at ``max_epochs`` or
past ``max_seconds``; finally tune per-label thresholds (and the at-least-one rule) on the
validation split only, and package everything as an artifact.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.logging import get_logger
from common.metrics import macro_f1, micro_f1
from model import glove
from model.artifact import Artifact
from model.config import NetworkConfig
from model.encoder import PAD_ID, UNK_ID, TextEncoder
from model.inference import AT_LEAST_ONE
from model.network import BiLSTMClassifier, build_network
from model.torch_runtime import network_scores
from schemas import LabelledArticle, ModelManifest, TrainingDataSummary
from trainer import checkpoint, distributed
from trainer.data import EncodedSplit, encode_split, epoch_batches, with_title_copies
from trainer.errors import TrainerError
from trainer.linear_path import RARE_BELOW, LinearPath, fit_linear_path
from trainer.profiles import TrainingProfile, profile
from trainer.progress import TrainingProgress
from trainer.thresholds import DecisionRule, best_global_threshold, choose_rule

log = get_logger("trainer.train")
STOPPING = frozenset({"max_epochs", "patience", "max_seconds"})


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to learn): device, threads, checkpoints, progress bar."""

    device: str = "auto"
    threads: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = False
    source: str = "reuters-21578"
    feedback_documents: int = 0


@dataclass
class _Run:
    """The state one training run carries from epoch to epoch."""

    settings: TrainingProfile
    world: distributed.World
    encoder: TextEncoder
    network: BiLSTMClassifier
    average: BiLSTMClassifier
    """Exponential moving average of ``network``'s weights (``network`` itself without EMA):
    the weights that are validated, kept and shipped."""
    trainer: nn.Module
    optimizer: torch.optim.Optimizer
    loss: nn.Module
    train: EncodedSplit
    validation: EncodedSplit
    progress: checkpoint.Progress
    best_state: dict[str, torch.Tensor]
    fingerprint: str
    linear_path: LinearPath | None = None


def train_model(
    train: Sequence[LabelledArticle],
    validation: Sequence[LabelledArticle],
    labels: Sequence[str],
    profile_name: str | TrainingProfile = "fast",
    options: RunOptions | None = None,
) -> tuple[Artifact, dict[str, float]]:
    """Train on ``train``, select and calibrate on ``validation``; the artifact and its metrics.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank calls this with the same data and
    returns the same artifact; only rank 0 writes checkpoints.
    """
    settings = profile(profile_name) if isinstance(profile_name, str) else profile_name
    options = options or RunOptions()
    _check_inputs(train, validation, labels)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    world = distributed.join(options.device)
    try:
        run = _prepare(train, validation, labels, settings=settings, world=world, options=options)
        _fit(run, options)
        return _package(run, labels, options, len(train), len(validation))
    finally:
        distributed.leave(world)


def _check_inputs(
    train: Sequence[LabelledArticle], validation: Sequence[LabelledArticle], labels: Sequence[str]
) -> None:
    if not train or not validation:
        raise TrainerError(
            f"need training and validation articles, got {len(train)} and {len(validation)}"
        )
    if not labels or len(set(labels)) != len(labels):
        raise TrainerError("labels must be a non-empty list of distinct names")


def _prepare(
    train: Sequence[LabelledArticle],
    validation: Sequence[LabelledArticle],
    labels: Sequence[str],
    *,
    settings: TrainingProfile,
    world: distributed.World,
    options: RunOptions,
) -> _Run:
    torch.manual_seed(settings.seed)
    encoder = TextEncoder.train(
        (a.text for a in train),
        vocab_size=settings.vocab_size,
        min_frequency=settings.min_frequency,
        max_tokens=settings.max_tokens,
    )
    train_split = encode_split(
        encoder, with_title_copies(train) if settings.title_copies else train, labels
    )
    validation_split = encode_split(encoder, validation, labels)
    network = _initial_network(settings, encoder, train_split).to(world.device)
    optimizer = _optimizer(network, settings)
    run = _Run(
        settings=settings,
        world=world,
        encoder=encoder,
        network=network,
        average=copy.deepcopy(network) if settings.ema_decay > 0 else network,
        trainer=distributed.wrap(network, world),
        optimizer=optimizer,
        loss=nn.BCEWithLogitsLoss(pos_weight=_pos_weight(train_split, settings, world.device)),
        train=train_split,
        validation=validation_split,
        progress=checkpoint.Progress(),
        best_state=_cpu_copy(network),
        fingerprint=_fingerprint(settings, encoder, train, validation, labels),
    )
    if options.resume and options.checkpoint_dir is not None:
        _restore(run, options.checkpoint_dir)
    return run


def _initial_network(
    settings: TrainingProfile, encoder: TextEncoder, train: EncodedSplit
) -> BiLSTMClassifier:
    config = NetworkConfig.for_data(
        settings, vocab_size=encoder.vocab_size, n_labels=train.targets.shape[1]
    )
    network = build_network(config, seed=settings.seed)
    if settings.bag_of_words:
        _set_idf(network, train)
    if settings.prior_bias:
        _set_prior_bias(network, train)
    if settings.glove:
        found = glove.initialise(network, encoder)
        log.info("glove embeddings", words=found, available=glove.available())
    return network


def _set_prior_bias(network: BiLSTMClassifier, train: EncodedSplit) -> None:
    """Start each logit at its label's log-odds in the training data, so the first epochs
    learn what distinguishes articles instead of how rare each label is."""
    prior = (train.targets.sum(axis=0) + 1.0) / (len(train) + 2.0)
    with torch.no_grad():
        network.head.bias.copy_(torch.from_numpy(np.log(prior / (1.0 - prior))))


def _set_idf(network: BiLSTMClassifier, train: EncodedSplit) -> None:
    """Smoothed inverse document frequency of each word in the training split, as
    scikit-learn's ``TfidfVectorizer`` computes it (``[PAD]`` and ``[UNK]`` stay 0)."""
    documents = np.zeros(network.config.vocab_size)
    for sequence in train.sequences:
        documents[np.unique(sequence)] += 1.0
    idf = np.log((1.0 + len(train)) / (1.0 + documents)) + 1.0
    idf[[PAD_ID, UNK_ID]] = 0.0
    with torch.no_grad():
        network.idf.copy_(torch.from_numpy(idf))


def _optimizer(network: BiLSTMClassifier, settings: TrainingProfile) -> torch.optim.Optimizer:
    """AdamW over the LSTM's weights; the bag-of-words path (when present) is frozen at zero
    here and fitted after the LSTM (``trainer.linear_path``)."""
    if network.config.bag_of_words:
        network.wide.weight.requires_grad_(False)
    trained = [p for p in network.parameters() if p.requires_grad]
    return torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def _learning_rate(settings: TrainingProfile, progress: float) -> float:
    """The rate at ``progress`` (0..1 through ``max_epochs``): constant, or linear decay."""
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    fraction = 1.0 - (1.0 - settings.final_lr_fraction) * min(progress, 1.0)
    return settings.learning_rate * fraction


def _pos_weight(
    split: EncodedSplit, settings: TrainingProfile, device: torch.device
) -> torch.Tensor | None:
    if settings.pos_weight_cap <= 0:
        return None
    positives = split.targets.sum(axis=0)
    weight = np.clip(
        (len(split) - positives) / np.maximum(positives, 1.0), 1.0, settings.pos_weight_cap
    )
    return torch.tensor(weight, dtype=torch.float32, device=device)


def _fingerprint(
    settings: TrainingProfile,
    encoder: TextEncoder,
    train: Sequence[LabelledArticle],
    validation: Sequence[LabelledArticle],
    labels: Sequence[str],
) -> str:
    """Data and settings a checkpoint must share to be resumed; the stopping rules are left
    out, so a finished run can be resumed with more epochs or time."""
    learning = {k: v for k, v in settings.to_dict().items() if k not in STOPPING}
    digest = hashlib.sha256()
    digest.update(json.dumps(learning, sort_keys=True).encode())
    digest.update(encoder.digest.encode())
    digest.update(json.dumps(list(labels)).encode())
    for article in (*train, *validation):
        digest.update(f"{article.id}\x00{','.join(article.labels)}\x00".encode())
    return digest.hexdigest()


def _restore(run: _Run, directory: Path) -> None:
    saved = checkpoint.load(directory, run.fingerprint)
    if saved is None:
        log.info("no checkpoint to resume", directory=str(directory))
        return
    run.network.load_state_dict(saved.model)
    if saved.average:
        run.average.load_state_dict(saved.average)
    run.optimizer.load_state_dict(saved.optimizer)
    run.best_state = saved.best
    run.progress = saved.progress
    log.info("resumed", epoch=saved.progress.epoch, best_f1=saved.progress.best_f1)


def _fit(run: _Run, options: RunOptions) -> None:
    settings = run.settings
    stop = _should_stop(run)
    with TrainingProgress(
        enabled=options.progress and run.world.is_main, epochs=settings.max_epochs
    ) as bar:
        while not stop:
            started = time.perf_counter()
            epoch = run.progress.epoch + 1
            loss = _train_epoch(run, epoch, bar)
            f1 = _validation_f1(run)
            seconds = time.perf_counter() - started
            improved = _record_epoch(run, epoch, loss=loss, f1=f1, seconds=seconds)
            bar.end_epoch(loss, f1, improved)
            if run.world.is_main and options.checkpoint_dir is not None:
                checkpoint.save(options.checkpoint_dir, _snapshot(run))
            stop = distributed.agree(_should_stop(run), run.world)
    run.average.load_state_dict(run.best_state)
    if settings.bag_of_words:
        run.linear_path = fit_linear_path(run.average, run.train, run.validation, run.world.device)
        log.info("linear path", **asdict(run.linear_path))


def _train_epoch(run: _Run, epoch: int, bar: TrainingProgress) -> float:
    settings, world = run.settings, run.world
    torch.manual_seed(settings.seed * 1009 + epoch * 31 + world.rank)
    batches = list(
        epoch_batches(
            run.train,
            settings.batch_size,
            seed=settings.seed,
            epoch=epoch,
            rank=world.rank,
            world_size=world.size,
        )
    )
    bar.start_epoch(epoch, len(batches))
    run.trainer.train()
    total = 0.0
    for step, batch in enumerate(batches, start=1):
        rate = _learning_rate(
            settings, (epoch - 1 + (step - 1) / len(batches)) / settings.max_epochs
        )
        for group in run.optimizer.param_groups:
            group["lr"] = rate
        ids = drop_words(batch.ids, settings.word_dropout).to(world.device)
        logits = run.trainer(ids, batch.lengths)
        loss = run.loss(logits, batch.targets.to(world.device))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(run.network.parameters(), settings.clip_norm)
        run.optimizer.step()
        _update_average(run, (epoch - 1) * len(batches) + step)
        total += float(loss.item())
        bar.step(total / step)
    return distributed.mean_across(total / max(len(batches), 1), world)


def drop_words(ids: torch.Tensor, rate: float) -> torch.Tensor:
    """``ids`` with each real token replaced by ``[UNK]`` with probability ``rate``, so the
    network learns to cope with words it has not seen (the test split is later news)."""
    if rate <= 0:
        return ids
    dropped = (torch.rand(ids.shape) < rate) & (ids != PAD_ID)
    return ids.masked_fill(dropped, UNK_ID)


def _update_average(run: _Run, step: int) -> None:
    """EMA with the usual warm-up: early steps weigh more, so the average starts near the
    initial weights without lagging behind for thousands of steps."""
    if run.average is run.network:
        return
    decay = min(run.settings.ema_decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        averaged: list[torch.Tensor] = list(run.average.parameters())
        current: list[torch.Tensor] = list(run.network.parameters())
        torch._foreach_mul_(averaged, decay)
        torch._foreach_add_(averaged, current, alpha=1.0 - decay)


def _validation_scores(run: _Run) -> npt.NDArray[np.float32]:
    run.average.eval()
    return network_scores(run.average, run.validation.sequences, device=run.world.device)


def _validation_f1(run: _Run) -> float:
    _, f1 = best_global_threshold(_validation_scores(run), run.validation.targets)
    return f1


def _record_epoch(run: _Run, epoch: int, *, loss: float, f1: float, seconds: float) -> bool:
    """Note the epoch in the run's progress; whether it is the best so far."""
    progress = run.progress
    improved = f1 > progress.best_f1
    progress.epoch = epoch
    progress.elapsed_seconds += seconds
    progress.history.append(
        {"epoch": epoch, "loss": loss, "validation_micro_f1": f1, "seconds": seconds}
    )
    if improved:
        progress.best_f1, progress.best_epoch, progress.bad_epochs = f1, epoch, 0
        run.best_state = _cpu_copy(run.average)
    else:
        progress.bad_epochs += 1
    log.info(
        "epoch",
        epoch=epoch,
        loss=round(loss, 5),
        validation_micro_f1=round(f1, 4),
        best_epoch=progress.best_epoch,
        seconds=round(seconds, 1),
    )
    return improved


def _should_stop(run: _Run) -> bool:
    progress, settings = run.progress, run.settings
    return (
        progress.epoch >= settings.max_epochs
        or progress.bad_epochs >= settings.patience
        or progress.elapsed_seconds >= settings.max_seconds
    )


def _snapshot(run: _Run) -> checkpoint.Checkpoint:
    return checkpoint.Checkpoint(
        fingerprint=run.fingerprint,
        encoder_json=run.encoder.to_json(),
        progress=replace(run.progress),
        model=_cpu_copy(run.network),
        average={} if run.average is run.network else _cpu_copy(run.average),
        best=run.best_state,
        optimizer=run.optimizer.state_dict(),
    )


def _cpu_copy(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}


def label_priors(split: EncodedSplit, labels: Sequence[str]) -> dict[str, float]:
    """The share of ``split``'s documents that carry each label."""
    if not len(split):
        return {}
    shares = split.targets.mean(axis=0)
    return {label: round(float(share), 6) for label, share in zip(labels, shares, strict=True)}


def _package(
    run: _Run, labels: Sequence[str], options: RunOptions, n_train: int, n_validation: int
) -> tuple[Artifact, dict[str, float]]:
    scores = _validation_scores(run)
    rule, held_out = choose_rule(scores, run.validation.targets, seed=run.settings.seed)
    metrics = _validation_metrics(scores, run.validation.targets, rule) | {
        "validation_heldout_micro_f1": round(held_out[rule.name], 4),
        "epochs": float(run.progress.epoch),
        "best_epoch": float(run.progress.best_epoch),
        "train_seconds": round(run.progress.elapsed_seconds, 1),
    }
    manifest = ModelManifest(
        created_at=datetime.now(UTC),
        labels=list(labels),
        thresholds=[round(float(t), 4) for t in rule.thresholds],
        encoder_digest=run.encoder.digest,
        hyperparameters=run.settings.to_dict()
        | {
            AT_LEAST_ONE: rule.at_least_one,
            "decision_rule": rule.name,
            "glove_used": run.settings.glove and glove.available(),
        }
        | _linear_path_settings(run.linear_path),
        training_data=TrainingDataSummary(
            train_documents=n_train,
            validation_documents=n_validation,
            feedback_documents=options.feedback_documents,
            source=options.source,
            label_priors=label_priors(run.train, labels),
        ),
        metrics=metrics,
    )
    artifact = Artifact(
        manifest=manifest,
        encoder=run.encoder,
        config=run.network.config,
        state={name: tensor.numpy() for name, tensor in _cpu_copy(run.average).items()},
    )
    log.info("trained", **{k: round(v, 4) for k, v in metrics.items()})
    return artifact, metrics


def _linear_path_settings(path: LinearPath | None) -> dict[str, float]:
    if path is None:
        return {}
    return {
        "bag_of_words_c": path.c,
        "bag_of_words_weight": path.weight,
        "bag_of_words_rare_weight": path.rare_weight,
        "bag_of_words_rare_below": RARE_BELOW,
    }


def _validation_metrics(
    scores: npt.NDArray[np.float32], targets: npt.NDArray[np.float32], rule: DecisionRule
) -> dict[str, float]:
    predicted = rule.apply(scores)
    return {
        "validation_micro_f1": micro_f1(targets, predicted),
        "validation_macro_f1": macro_f1(targets, predicted),
    }
