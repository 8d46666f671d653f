"""The micro-batcher's contract, with a hand-driven clock and no servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.batcher import Batch, Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_closes_at_max_items() -> None:
    batcher: Batcher[int] = Batcher(max_items=3, max_tokens=1000, max_wait_s=1.0, clock=Clock())
    assert batcher.add(1, 5) == []
    assert batcher.add(2, 5) == []
    [batch] = batcher.add(3, 5)
    assert batch.items == (1, 2, 3)
    assert batch.reason == "size"
    assert len(batcher) == 0


def test_an_item_that_would_overflow_the_padded_token_budget_starts_the_next_batch() -> None:
    batcher: Batcher[str] = Batcher(max_items=100, max_tokens=100, max_wait_s=1.0, clock=Clock())
    batcher.add("a", 10)
    batcher.add("b", 20)  # padded 40
    [batch] = batcher.add("c", 40)  # would be 40 x 3 = 120 > 100
    assert batch.items == ("a", "b")
    assert batch.reason == "tokens"
    assert batch.padded_tokens == 40
    assert batch.real_tokens == 30
    assert len(batcher) == 1


def test_a_batch_that_reaches_the_token_budget_exactly_closes_at_once() -> None:
    batcher: Batcher[str] = Batcher(max_items=100, max_tokens=40, max_wait_s=1.0, clock=Clock())
    batcher.add("a", 20)
    [batch] = batcher.add("b", 20)
    assert batch.items == ("a", "b")
    assert batch.reason == "tokens"


def test_a_single_item_over_the_budget_is_a_batch_of_its_own() -> None:
    batcher: Batcher[str] = Batcher(max_items=10, max_tokens=50, max_wait_s=1.0, clock=Clock())
    batcher.add("small", 5)
    closed = batcher.add("huge", 500)
    assert [b.items for b in closed] == [("small",), ("huge",)]
    assert len(batcher) == 0


def test_a_batch_closes_when_its_wait_is_up_and_the_remaining_wait_is_recomputed() -> None:
    clock = Clock()
    batcher: Batcher[int] = Batcher(max_items=10, max_tokens=1000, max_wait_s=0.05, clock=clock)
    assert batcher.remaining_s() is None
    batcher.add(1, 3)
    clock.now += 0.02
    assert batcher.remaining_s() == pytest.approx(0.03)
    batcher.add(2, 3)  # a later item does not restart the wait
    clock.now += 0.02
    assert batcher.remaining_s() == pytest.approx(0.01)
    assert batcher.due() is None
    clock.now += 0.01
    batch = batcher.due()
    assert batch is not None
    assert batch.items == (1, 2)
    assert batch.reason == "wait"
    assert batcher.due() is None


def test_flush_closes_the_open_batch_and_never_returns_an_empty_one() -> None:
    batcher: Batcher[int] = Batcher(max_items=10, max_tokens=1000, max_wait_s=1.0, clock=Clock())
    assert batcher.flush() is None
    batcher.add(7, 1)
    batch = batcher.flush()
    assert batch is not None
    assert batch.items == (7,)
    assert batch.reason == "flush"
    assert batcher.flush() is None
    with pytest.raises(ValueError, match="at least one item"):
        Batch((), (), 0.0, "flush")


@pytest.mark.parametrize(
    ("items", "tokens", "wait", "message"),
    [
        (0, 10, 1.0, "max_items"),
        (1, 0, 1.0, "max_tokens"),
        (1, 10, -1.0, "max_wait_s"),
        (1, 10, float("inf"), "max_wait_s"),
        (1, 10, float("nan"), "max_wait_s"),
    ],
)
def test_parameters_are_checked_at_construction(
    items: int, tokens: int, wait: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Batcher(items, tokens, wait)


def test_a_negative_length_is_refused() -> None:
    batcher: Batcher[int] = Batcher(4, 100, 1.0)
    with pytest.raises(ValueError, match="negative"):
        batcher.add(1, -1)


@given(
    lengths=st.lists(st.integers(min_value=0, max_value=300), max_size=200),
    max_items=st.integers(min_value=1, max_value=40),
    max_tokens=st.integers(min_value=1, max_value=2000),
)
def test_batches_keep_every_item_once_in_order_within_their_limits(
    lengths: list[int], max_items: int, max_tokens: int
) -> None:
    batcher: Batcher[int] = Batcher(max_items, max_tokens, 1.0, clock=Clock())
    batches = [b for i, n in enumerate(lengths) for b in batcher.add(i, n)]
    last = batcher.flush()
    batches += [last] if last else []
    assert [i for b in batches for i in b.items] == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= max_items
        assert batch.padded_tokens <= max_tokens or len(batch) == 1
