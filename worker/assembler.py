"""The assembler thread: polled chunks in, encoded batches out.

It decodes and encodes the next records while the scoring stage scores the current batch. A batch
is encoded by one model, the one serving when the batch opened; when the slot holds a new
model, whatever the old one encoded is flushed as a batch first, so a swap happens between
batches. ``END`` in the intake flushes the open batch and is passed on to the scoring stage.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass

from worker.batcher import Batch, Batcher
from worker.decoding import to_items
from worker.inference import Model
from worker.items import Item, Polled
from worker.stages import END, IDLE_S, _End, put
from worker.swap import ModelSlot


@dataclass(frozen=True)
class ModelBatch:
    """A closed batch and the model that encoded it (and must score it)."""

    batch_id: int
    batch: Batch[Item]
    model: Model


Intake = queue.Queue[list[Polled] | _End]
Batches = queue.Queue[ModelBatch | _End]


class Assembler:
    """Decodes, encodes and batches; hands batches on through a bounded queue."""

    def __init__(
        self,
        intake: Intake,
        batches: Batches,
        slot: ModelSlot,
        *,
        batcher: Batcher[Item],
        max_body_bytes: int,
        max_message_bytes: int,
        halt: threading.Event,
    ) -> None:
        self._intake = intake
        self._batches = batches
        self._slot = slot
        self._batcher = batcher
        self._max_body_bytes = max_body_bytes
        self._max_message_bytes = max_message_bytes
        self._halt = halt
        self._ids = itertools.count(1)
        self._model: Model | None = None

    def run(self) -> None:
        while not self._halt.is_set():
            chunk = self._next()
            if isinstance(chunk, _End):
                self._emit(self._batcher.flush())
                self._put(END)
                return
            if chunk is not None:
                self._add(chunk)
            self._emit(self._batcher.due())

    def _next(self) -> list[Polled] | _End | None:
        remaining = self._batcher.remaining_s()
        try:
            return self._intake.get(timeout=IDLE_S if remaining is None else remaining)
        except queue.Empty:
            return None

    def _add(self, chunk: list[Polled]) -> None:
        model = self._current_model()
        items = to_items(
            chunk, model, self._max_body_bytes, max_message_bytes=self._max_message_bytes
        )
        for item in items:
            for batch in self._batcher.add(item, item.length):
                self._emit(batch)

    def _current_model(self) -> Model:
        current = self._slot.current()
        assert current is not None, "the pipeline starts once a model is installed"
        if current is not self._model:
            self._emit(self._batcher.flush())  # what the old model encoded, it also scores
            self._model = current
        return current

    def _emit(self, batch: Batch[Item] | None) -> None:
        if batch is not None:
            assert self._model is not None
            self._put(ModelBatch(next(self._ids), batch, self._model))

    def _put(self, work: ModelBatch | _End) -> None:
        put(self._batches, work, self._halt)
