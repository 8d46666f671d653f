"""The micro-batcher: items with a token length in, batches out.

A batch closes at ``max_items`` items, at ``max_tokens`` padded tokens (longest x count), or
``max_wait_s`` after its first item arrived, whichever comes first. An item that would push
the open batch over the token budget closes it and opens the next one, so a batch only
exceeds the budget when a single item does. A batch is never empty. The batcher is pure: it
reads time from the injected clock and never sleeps; its owner asks :meth:`Batcher.remaining_s`
how long it may wait for more input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
CloseReason = Literal["size", "tokens", "wait", "flush"]


@dataclass(frozen=True)
class Batch(Generic[T]):
    """Items in arrival order with their token lengths, and why the batch closed."""

    items: tuple[T, ...]
    lengths: tuple[int, ...]
    opened_at: float
    reason: CloseReason

    def __post_init__(self) -> None:
        if not self.items or len(self.items) != len(self.lengths):
            raise ValueError("a batch holds at least one item and one length per item")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def padded_tokens(self) -> int:
        return max(self.lengths) * len(self.lengths)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)


@dataclass
class _Open(Generic[T]):
    opened_at: float
    items: list[T] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    longest: int = 0

    def padded_with(self, length: int) -> int:
        return max(self.longest, length) * (len(self.items) + 1)


class Batcher(Generic[T]):
    """Collects items into batches bounded by count, padded tokens and waiting time."""

    def __init__(
        self,
        max_items: int,
        max_tokens: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
        if not (max_wait_s >= 0 and math.isfinite(max_wait_s)):
            raise ValueError(f"max_wait_s must be finite and not negative, not {max_wait_s}")
        self.max_items = max_items
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._open: _Open[T] | None = None

    def __len__(self) -> int:
        return len(self._open.items) if self._open else 0

    def add(self, item: T, length: int) -> list[Batch[T]]:
        """Add one item; returns the batches (zero, one or two) this closed."""
        if length < 0:
            raise ValueError(f"a token length cannot be negative, not {length}")
        closed: list[Batch[T]] = []
        if self._open is not None and self._open.padded_with(length) > self.max_tokens:
            closed.append(self._close("tokens"))
        current = self._open or self._start()
        current.items.append(item)
        current.lengths.append(length)
        current.longest = max(current.longest, length)
        if len(current.items) >= self.max_items:
            closed.append(self._close("size"))
        elif current.longest * len(current.items) >= self.max_tokens:
            closed.append(self._close("tokens"))
        return closed

    def remaining_s(self) -> float | None:
        """Seconds until the open batch is due, recomputed now; None when nothing is open."""
        if self._open is None:
            return None
        return max(0.0, self._open.opened_at + self.max_wait_s - self._clock())

    def due(self) -> Batch[T] | None:
        """The open batch if its waiting time is up, else None."""
        remaining = self.remaining_s()
        if remaining is None or remaining > 0:
            return None
        return self._close("wait")

    def flush(self) -> Batch[T] | None:
        """Close the open batch now (shutdown, model change); None when nothing is open."""
        return self._close("flush") if self._open is not None else None

    def _start(self) -> _Open[T]:
        self._open = _Open(opened_at=self._clock())
        return self._open

    def _close(self, reason: CloseReason) -> Batch[T]:
        current = self._open
        assert current is not None and current.items, "only an open, non-empty batch closes"
        self._open = None
        return Batch(tuple(current.items), tuple(current.lengths), current.opened_at, reason)
