"""The articles and models the benchmarks run on.

The serving model is the ``fast`` profile trained on Reuters-21578, cached under
``~/.cache/tagstream/bench/`` keyed on the profile's settings and the corpus split. When it is
not cached and the plan does not train (quick mode), an untrained network of the same shape
with the same encoder stands in: speed and memory depend on the shapes and the token counts,
not on the weights, and the report says which one ran. The model sizes for the memory table
are untrained networks of the ``fast`` and ``full`` shapes and the toy model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import corpus
from common.paths import cache_dir
from model.artifact import Artifact
from model.config import NetworkConfig
from model.encoder import TextEncoder
from model.inference import Classifier, RuntimeName
from model.network import build_network
from model.toy import toy_artifact
from schemas import Article, ModelManifest, TrainingDataSummary
from tagstream.feed import unlabelled
from trainer.profiles import TrainingProfile, profile


@dataclass(frozen=True)
class BenchModel:
    """A model as the benchmarks use it: its artifact bytes and how it was made."""

    name: str
    data: bytes
    trained: bool

    @property
    def artifact(self) -> Artifact:
        return Artifact.from_bytes(self.data)

    @property
    def parameters(self) -> int:
        return sum(t.size for t in self.artifact.state.values())

    def classifier(
        self, *, threads: int = 1, device: str = "cpu", runtime: RuntimeName = "auto"
    ) -> Classifier:
        model = Classifier.from_artifact(
            self.artifact, version=1, device=device, threads=threads, runtime=runtime
        )
        model.warm_up()
        return model

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.name}.safetensors"
        path.write_bytes(self.data)
        return path


def articles() -> list[Article]:
    """The Reuters-21578 test split as workers receive it, without the empty ones (those
    go to the dead-letter topic, not to the model)."""
    return [unlabelled(a) for a in corpus.load().test if a.text.strip()]


def renamed(source: list[Article], count: int, tag: str) -> list[Article]:
    """``count`` articles cycling through ``source``, each with an id unique to ``tag``."""
    return [
        source[i % len(source)].model_copy(update={"id": f"{source[i % len(source)].id}.{tag}.{i}"})
        for i in range(count)
    ]


def serving_model(*, train: bool, toy: bool = False) -> BenchModel:
    """The model the throughput benchmarks use (see the module docstring)."""
    if toy:
        return BenchModel("toy", toy_artifact().to_bytes(), trained=False)
    path = trained_path("fast")
    if path.is_file():
        return BenchModel("fast", path.read_bytes(), trained=True)
    if train:
        return BenchModel("fast", train_fast(path), trained=True)
    return untrained("fast")


def size_variants(names: tuple[str, ...]) -> list[BenchModel]:
    """The models of the memory table, smallest first."""
    return [
        BenchModel("toy", toy_artifact().to_bytes(), trained=False)
        if name == "toy"
        else untrained(name)
        for name in names
    ]


def trained_path(name: str) -> Path:
    settings = profile(name)
    data = corpus.load()
    key = json.dumps(
        [settings.to_dict(), len(data.train), len(data.validation), data.labels], sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "bench" / f"{name}-{digest}.safetensors"


def train_fast(path: Path) -> bytes:
    """Train the ``fast`` profile on the training split (about 2 minutes) and cache it."""
    from trainer.train import train_model  # noqa: PLC0415 - only when a model must be trained

    data = corpus.load()
    artifact, _ = train_model(data.train, data.validation, data.labels, "fast")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(artifact.to_bytes())
    return path.read_bytes()


def untrained(name: str) -> BenchModel:
    """A network of profile ``name``'s shape with random weights and its real encoder."""
    settings = profile(name)
    data = corpus.load()
    encoder = TextEncoder.train(
        (a.text for a in data.train),
        vocab_size=settings.vocab_size,
        min_frequency=settings.min_frequency,
        max_tokens=settings.max_tokens,
    )
    artifact = random_artifact(settings, encoder, data.labels)
    return BenchModel(f"{name}-shaped", artifact.to_bytes(), trained=False)


def random_artifact(settings: TrainingProfile, encoder: TextEncoder, labels: list[str]) -> Artifact:
    config = NetworkConfig(
        vocab_size=encoder.vocab_size,
        n_labels=len(labels),
        embedding_dim=settings.embedding_dim,
        hidden_size=settings.hidden_size,
        layers=settings.layers,
        pooling=settings.pooling,
    )
    network = build_network(config, seed=settings.seed)
    manifest = ModelManifest(
        created_at=datetime.now(UTC),
        labels=labels,
        thresholds=[0.5] * len(labels),
        encoder_digest=encoder.digest,
        hyperparameters={"profile": settings.name, "trained": False},
        training_data=TrainingDataSummary(train_documents=0, validation_documents=0),
    )
    state = {k: t.detach().clone() for k, t in network.state_dict().items()}
    return Artifact(manifest=manifest, encoder=encoder, config=config, state=state)
