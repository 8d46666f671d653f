"""Scoring a batch: input order kept, shapes checked, a failing article isolated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from model.errors import ModelError
from model.inference import resolve_device
from tests.worker.fakes import POISON_ID, FakeModel
from worker.inference import Scorer


class Identity(FakeModel):
    """Scores that say which input they belong to: row i = (length, first id)."""

    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self.calls.append(len(token_ids))
        if any(POISON_ID in ids for ids in token_ids):
            raise MemoryError("out of memory")
        return np.array([[len(ids), ids[0]] for ids in token_ids], dtype=np.float32)


def test_scores_come_back_in_input_order_whatever_the_buckets() -> None:
    ids = [[7] * n for n in (40, 3, 90, 3, 12, 41)]
    scored = Scorer(bucket_size=2).score(Identity(), ids)
    assert [(int(r[0]), int(r[1])) for r in scored.rows] == [(len(i), 7) for i in ids]


def test_buckets_group_similar_lengths_so_padding_stays_small() -> None:
    ids = [[1] * n for n in (100, 5, 98, 6, 101, 4)]
    bucketed = Scorer(bucket_size=64).score(Identity(), ids)
    whole = Scorer(bucket_size=None).score(Identity(), ids)
    assert whole.padded_tokens == 101 * 6
    assert bucketed.padded_tokens == 6 * 3 + 101 * 3
    assert bucketed.real_tokens == whole.real_tokens == sum(len(i) for i in ids)
    assert bucketed.padding_ratio < 0.05 < whole.padding_ratio


def test_a_failing_article_is_isolated_and_the_rest_are_scored() -> None:
    model = Identity()
    ids = [[1, 2], [3], [POISON_ID, 4], [5, 6, 7], [8]]
    scored = Scorer(bucket_size=None).score(model, ids)
    assert isinstance(scored.rows[2], MemoryError)
    assert [int(r[1]) for i, r in enumerate(scored.rows) if i != 2] == [1, 3, 5, 8]
    assert len(model.calls) > 1  # the batch was split to find the culprit


class WrongShape(FakeModel):
    def scores(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        return np.zeros((len(token_ids) + 1, len(self.labels)), dtype=np.float32)


def test_a_model_that_returns_the_wrong_number_of_rows_fails_every_article() -> None:
    scored = Scorer(bucket_size=None).score(WrongShape(), [[1], [2]])
    assert all(isinstance(r, ValueError) and "shape" in str(r) for r in scored.rows)


def test_an_empty_batch_scores_nothing() -> None:
    scored = Scorer(bucket_size=8).score(Identity(), [])
    assert scored.rows == []
    assert scored.padding_ratio == 0.0


def test_bucket_size_is_checked() -> None:
    with pytest.raises(ValueError, match="bucket_size"):
        Scorer(bucket_size=0)


def test_auto_device_is_cpu_without_a_gpu_and_explicit_devices_are_kept() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu")
