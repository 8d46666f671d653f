"""Publish and load times of a ``--profile full``-sized model through the Redis registry.

    .venv/bin/python benchmarks/registry.py [--repeats 7] [--vocab 30000]

Talks to the Redis in ``TAGSTREAM_REDIS_*`` (e.g. the one ``tagstream stack up`` starts) under
a throwaway namespace it deletes afterwards. The artifact is a real one (safetensors + JSON)
with the ``full`` profile's network (``trainer.profiles``), a 30 000-word vocabulary and 90
labels; its weights are random, which does not change its size.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from common.logging import configure
from common.settings import RedisSettings, load
from model.artifact import Artifact
from model.cache import ArtifactCache
from model.config import NetworkConfig
from model.encoder import TextEncoder
from model.loader import ModelLoader
from model.network import build_network
from model.registry import Registry
from model.settings import RegistrySettings
from model.watcher import AliasWatcher
from schemas.manifest import ModelManifest, TrainingDataSummary
from trainer.profiles import profile


def letters(number: int) -> str:
    """A distinct lower-case word per number (the encoder maps digits to 0)."""
    word = ""
    while True:
        number, digit = divmod(number, 26)
        word += chr(ord("a") + digit)
        if number == 0:
            return "w" + word


def full_sized_artifact(vocab: int, labels: int) -> Artifact:
    words = [letters(i) for i in range(vocab)]
    texts = (" ".join(words[start : start + 1000]) for start in range(0, vocab, 1000))
    encoder = TextEncoder.train(texts, vocab_size=vocab, min_frequency=1, max_tokens=256)
    config = NetworkConfig.for_data(profile("full"), vocab_size=encoder.vocab_size, n_labels=labels)
    network = build_network(config, seed=0)
    names = [f"label{i}" for i in range(labels)]
    manifest = ModelManifest(
        created_at=datetime.now(UTC),
        labels=names,
        thresholds=[0.5] * labels,
        encoder_digest=encoder.digest,
        hyperparameters={"profile": "full-sized benchmark"},
        training_data=TrainingDataSummary(train_documents=0, validation_documents=0),
    )
    state = {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}
    return Artifact(manifest=manifest, encoder=encoder, config=config, state=state)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def describe(name: str, seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    return (
        f"{name:<34} median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f}   max {ms[-1]:7.1f}"
    )


def one_round(
    registry: Registry, cache: ArtifactCache, artifact: Artifact, data: bytes
) -> dict[str, float]:
    """Publish, promote, load with an empty then a warm cache, parse: seconds for each."""
    result = {"publish": timed(lambda: registry.publish(data, artifact.manifest))}
    registry.promote(registry.versions()[-1])
    result["cold"] = timed(lambda: ModelLoader(registry, cache).load())
    loaded = ModelLoader(registry, cache).load()
    result["warm"] = timed(lambda: ModelLoader(registry, cache).load())
    sha = loaded.manifest.artifact_sha256
    result["parse"] = timed(lambda: Artifact.from_bytes(loaded.data, sha))
    return result


def watcher_latency(registry: Registry, *, pubsub: bool, rounds: int) -> list[float]:
    """Seconds from calling promote() to the watcher's callback, per alias flip."""
    seen: queue.Queue[float] = queue.Queue()
    versions = registry.versions()[-2:]
    latencies = []
    with AliasWatcher(registry, lambda _: seen.put(time.perf_counter()), pubsub=pubsub):
        for _ in range(rounds):
            started = time.perf_counter()
            current = registry.aliases().get("canary")
            registry.promote(versions[0] if current == versions[1] else versions[1], "canary")
            latencies.append(seen.get(timeout=10) - started)
    return latencies


def run(repeats: int, vocab: int, labels: int) -> None:
    torch.set_num_threads(1)
    configure("WARNING")
    artifact = full_sized_artifact(vocab, labels)
    data = artifact.to_bytes()
    redis_settings = load(RedisSettings).model_copy(update={"namespace": f"bench-{os.getpid()}"})
    settings = load(RegistrySettings).model_copy(update={"retention": repeats + 1})
    times: dict[str, list[float]] = {key: [] for key in ("publish", "cold", "warm", "parse")}
    with (
        Registry.from_settings(redis_settings, settings) as registry,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for repeat in range(repeats):
            cache = ArtifactCache(Path(tmp) / f"cache-{repeat}")
            for key, seconds in one_round(registry, cache, artifact, data).items():
                times[key].append(seconds)
        pubsub = watcher_latency(registry, pubsub=True, rounds=repeats)
        polling = watcher_latency(registry, pubsub=False, rounds=repeats)
        for key in registry.client.scan_iter(f"{redis_settings.namespace}:*"):
            registry.client.unlink(key)
    print(
        f"artifact: {len(data) / 2**20:.1f} MiB, vocabulary {artifact.encoder.vocab_size}, "
        f"{labels} labels, chunks of {settings.chunk_bytes / 2**20:.0f} MiB; {repeats} runs"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"redis at {redis_settings.url}"
    )
    print(describe("publish (stage + commit)", times["publish"]))
    print(describe("load, cold cache (Redis + verify)", times["cold"]))
    print(describe("load, warm cache (disk + verify)", times["warm"]))
    print(describe("Artifact.from_bytes (after load)", times["parse"]))
    print(describe("watcher, pub/sub", pubsub))
    print(describe(f"watcher, polling every {settings.poll_interval_s} s", polling))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--labels", type=int, default=90)
    args = parser.parse_args()
    run(args.repeats, args.vocab, args.labels)


if __name__ == "__main__":
    main()
