"""Inference: batch invariance on every path, input order, decisions, encoding."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from model.artifact import Artifact
from model.config import NetworkConfig
from model.errors import ModelError
from model.inference import AT_LEAST_ONE, STRATEGIES, Classifier, length_buckets
from model.network import build_network, tfidf
from model.onnx_runtime import LAYOUTS as ONNX_LAYOUTS
from model.torch_runtime import TorchRuntime, traced_padded
from model.toy import toy_artifact

PATHS = [("torch", s) for s in STRATEGIES] + [("onnx", s) for s in ONNX_LAYOUTS]
"""Every runtime with every layout it offers."""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _variant(**changes: object) -> Artifact:
    """The toy artifact with another network shape and fresh random weights."""
    toy = toy_artifact()
    config = dataclasses.replace(toy.config, **changes)  # type: ignore[arg-type]
    state = dict(build_network(config, seed=7).state_dict())
    if config.bag_of_words:  # the trainer sets these; random here so the path counts
        generator = torch.Generator().manual_seed(7)
        state["wide.weight"] = torch.randn(state["wide.weight"].shape, generator=generator)
        state["idf"] = torch.rand(state["idf"].shape, generator=generator) * 5
    return Artifact(toy.manifest, toy.encoder, config, state)


NETWORKS: dict[str, dict[str, object]] = {
    "max-1-layer": {},
    "max_mean-2-layers": {"layers": 2, "pooling": "max_mean"},
    "final-2-layers": {"layers": 2, "pooling": "final"},
    "mean": {"pooling": "mean"},
    "bag-of-words": {"pooling": "max_mean", "bag_of_words": True},
}


def _random_sequences(vocab: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 513, size=count)
    lengths[:3] = [1, 512, 2]
    return [rng.integers(1, vocab, size=int(n)).tolist() for n in lengths]


@pytest.mark.parametrize("warmed", [False, True], ids=["eager", "warmed"])
@pytest.mark.parametrize(("runtime", "strategy"), PATHS)
@pytest.mark.parametrize("network", NETWORKS)
def test_scores_alone_equal_scores_in_any_batch(
    runtime: str, strategy: str, network: str, warmed: bool
) -> None:
    """For random lengths 1..512, each article's scores alone equal its scores in a batch, on
    either runtime (warmed up, torch's padded layouts run the traced network)."""
    classifier = Classifier.from_artifact(
        _variant(**NETWORKS[network]), version=1, device="cpu", runtime=runtime
    )
    if warmed:
        classifier.warm_up()
    classifier.strategy = strategy  # type: ignore[assignment]
    sequences = _random_sequences(classifier.artifact.config.vocab_size, 24, seed=len(network))
    alone = np.concatenate([classifier.scores([s]) for s in sequences])
    whole = classifier.scores(sequences)
    order = np.random.default_rng(1).permutation(len(sequences))
    shuffled = classifier.scores([sequences[i] for i in order])
    halves = np.concatenate([classifier.scores(sequences[:9]), classifier.scores(sequences[9:])])
    for batched in (whole, shuffled[np.argsort(order)], halves):
        np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("network", NETWORKS)
def test_every_runtime_and_layout_gives_the_same_scores(network: str) -> None:
    """ONNX Runtime's graph computes the torch network's scores (within float rounding)."""
    artifact = _variant(**NETWORKS[network])
    sequences = _random_sequences(artifact.config.vocab_size, 16, seed=3)
    results = {}
    for runtime, strategy in PATHS:
        classifier = Classifier.from_artifact(artifact, version=1, device="cpu", runtime=runtime)
        classifier.strategy = strategy  # type: ignore[assignment]
        results[runtime, strategy] = classifier.scores(sequences)
    for scores in results.values():
        np.testing.assert_allclose(scores, results["torch", "packed"], atol=1e-5, rtol=0)


def test_the_bag_of_words_path_reads_word_counts_not_order_or_padding() -> None:
    """Wide & deep: the linear path sees each article's own TF-IDF vector only."""
    network = build_network(_variant(bag_of_words=True).config)
    network.idf.uniform_(0.5, 3.0)
    network.idf[:2] = 0.0
    ids = torch.tensor([[5, 6, 5, 7, 0, 0], [7, 5, 6, 5, 9, 9]])
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    vectors = tfidf(ids, mask, network.idf)
    alone = tfidf(ids[:1, :4], mask[:1, :4], network.idf)
    torch.testing.assert_close(vectors[:1], alone)
    expected = torch.zeros_like(network.idf)
    tf = torch.tensor([1 + np.log(2.0), 1.0, 1.0], dtype=torch.float32)
    expected[[5, 6, 7]] = tf * network.idf[[5, 6, 7]]
    torch.testing.assert_close(vectors[0], expected / expected.norm())
    assert vectors[1, 9] > 0 and vectors[0, 9] == 0


def test_an_unknown_word_or_padding_adds_nothing_to_the_bag_of_words() -> None:
    network = build_network(_variant(bag_of_words=True).config)
    assert network.idf[0] == 0 and network.idf[1] == 0
    network.idf[2:] = 2.0
    plain = tfidf(torch.tensor([[5, 6]]), torch.tensor([[True, True]]), network.idf)
    with_unk = tfidf(torch.tensor([[5, 1, 6]]), torch.tensor([[True, True, True]]), network.idf)
    torch.testing.assert_close(plain, with_unk)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_padding_positions_do_not_reach_the_scores(runtime: str) -> None:
    """A fused bidirectional LSTM would read padding first backwards; this network must not."""
    classifier = Classifier.from_artifact(_variant(), version=1, device="cpu", runtime=runtime)
    classifier.strategy = "padded"
    short = [5, 6, 7]
    alone = classifier.scores([short])
    beside_long = classifier.scores([short, [9] * 400])[:1]
    np.testing.assert_allclose(beside_long, alone, atol=1e-6, rtol=0)


def test_scores_shape_dtype_and_range() -> None:
    classifier = Classifier.from_artifact(toy_artifact(), version=4, device="cpu")
    scores = classifier.scores(classifier.encode(["earn up", "", "acq crude"]))
    assert scores.shape == (3, 3)
    assert scores.dtype == np.float32
    assert ((scores > 0) & (scores < 1)).all()
    assert classifier.scores([]).shape == (0, 3)
    assert classifier.version == 4
    assert classifier.device == "cpu"


def test_sequences_longer_than_max_tokens_are_truncated() -> None:
    classifier = Classifier.from_artifact(toy_artifact(), version=1, device="cpu")
    long = list(range(1, 30)) * 30
    np.testing.assert_array_equal(classifier.scores([long]), classifier.scores([long[:512]]))


def test_out_of_vocabulary_ids_are_rejected() -> None:
    classifier = Classifier.from_artifact(toy_artifact(), version=1, device="cpu")
    with pytest.raises(ModelError):
        classifier.scores([[classifier.artifact.config.vocab_size]])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_default_strategy_on_cpu_is_bucketed_and_unknown_ones_are_refused(runtime: str) -> None:
    classifier = Classifier.from_artifact(toy_artifact(), version=1, device="cpu", runtime=runtime)
    assert classifier.strategy == "bucketed"
    with pytest.raises(ModelError):
        classifier.strategy = "sorted"  # type: ignore[assignment]


def test_the_cpu_runs_onnx_runtime_unless_told_otherwise() -> None:
    assert Classifier.from_artifact(toy_artifact(), version=1, device="cpu").runtime.name == "onnx"
    chosen = Classifier.from_artifact(toy_artifact(), version=1, device="cpu", runtime="torch")
    assert chosen.runtime.name == "torch"


def test_the_onnx_runtime_refuses_what_it_cannot_run() -> None:
    classifier = Classifier.from_artifact(toy_artifact(), version=1, runtime="onnx")
    with pytest.raises(ModelError, match="lays batches out"):
        classifier.strategy = "packed"
    with pytest.raises(ModelError, match="CPU only"):
        Classifier.from_artifact(toy_artifact(), version=1, device="cuda", runtime="onnx")
    with pytest.raises(ModelError, match="runtime must be"):
        Classifier.from_artifact(toy_artifact(), version=1, runtime="tflite")  # type: ignore[arg-type]


def test_decide_returns_labels_over_threshold_best_first() -> None:
    classifier = Classifier.from_artifact(toy_artifact(), version=1, device="cpu")
    decided = classifier.decide(np.array([0.6, 0.2, 0.9]))
    assert [label for label, _ in decided] == ["crude", "earn"]
    assert [score for _, score in decided] == pytest.approx([0.9, 0.6])
    assert classifier.decide([0.1, 0.2, 0.3]) == []


def test_decide_gives_the_top_label_when_the_artifact_asks_for_one() -> None:
    toy = toy_artifact()
    manifest = toy.manifest.model_copy(update={"hyperparameters": {AT_LEAST_ONE: True}})
    artifact = Artifact(manifest, toy.encoder, toy.config, toy.state)
    classifier = Classifier.from_artifact(artifact, version=1, device="cpu")
    [(label, score)] = classifier.decide([0.1, 0.3, 0.2])
    assert label == "acq"
    assert score == pytest.approx(0.3)


@pytest.mark.parametrize("at_least_one", [False, True])
def test_deciding_a_batch_at_once_gives_each_row_its_own_decision(at_least_one: bool) -> None:
    """The batch form of the rule (the worker's) equals the rule row by row, ties included."""
    toy = toy_artifact()
    manifest = toy.manifest.model_copy(update={"hyperparameters": {AT_LEAST_ONE: at_least_one}})
    classifier = Classifier.from_artifact(
        Artifact(manifest, toy.encoder, toy.config, toy.state), version=1
    )
    rng = np.random.default_rng(4)
    scores = rng.choice([0.05, 0.3, 0.5, 0.7, 0.9], size=(200, 3)).astype(np.float32)
    assert classifier.decide_rows(scores) == [classifier.decide(row) for row in scores]
    assert classifier.decide_rows(np.zeros((0, 3), dtype=np.float32)) == []
    with pytest.raises(ModelError):
        classifier.decide_rows(scores[:, :2])


def test_warm_up_runs() -> None:
    Classifier.from_artifact(toy_artifact(), version=1, device="cpu").warm_up()


@pytest.mark.parametrize("network", NETWORKS)
def test_the_traced_network_gives_the_plain_networks_scores_to_the_bit(network: str) -> None:
    """Warmed up on the CPU, the padded layouts run one traced call (no GIL round trip per
    operator) and give exactly the scores of the network called from Python."""
    artifact = _variant(**NETWORKS[network])
    plain = Classifier.from_artifact(artifact, version=1, device="cpu", runtime="torch")
    traced = Classifier.from_artifact(artifact, version=1, device="cpu", runtime="torch")
    traced.warm_up()
    assert isinstance(traced.runtime, TorchRuntime)
    assert traced_padded(traced.runtime.network) is not None
    sequences = _random_sequences(plain.artifact.config.vocab_size, 40, seed=5)
    for strategy in ("bucketed", "padded"):
        plain.strategy = traced.strategy = strategy
        calls = _count_python_forward_calls(traced)
        scores = traced.scores(sequences)
        assert calls() == 0, "the traced path does not call the network from Python"
        np.testing.assert_array_equal(scores, plain.scores(sequences))


def _count_python_forward_calls(classifier: Classifier) -> Callable[[], int]:
    seen: list[int] = []
    assert isinstance(classifier.runtime, TorchRuntime)
    classifier.runtime.network.register_forward_pre_hook(lambda *_: seen.append(1))
    return lambda: len(seen)


def test_length_buckets_cover_every_index_once_with_similar_lengths() -> None:
    lengths = [5, 300, 7, 6, 290, 1, 512, 8]
    buckets = list(length_buckets(lengths, max_items=3))
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 for b in buckets)
    assert all(max(lengths[i] for i in b) <= 1.3 * min(lengths[i] for i in b) + 8 for b in buckets)


def test_network_config_round_trips_and_rejects_nonsense() -> None:
    config = NetworkConfig(vocab_size=10, n_labels=2, layers=2, pooling="final")
    assert NetworkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelError):
        NetworkConfig(vocab_size=0, n_labels=2)
    with pytest.raises(ModelError):
        NetworkConfig.from_dict({**config.to_dict(), "surprise": 1})
