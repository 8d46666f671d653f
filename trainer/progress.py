"""A progress bar for training (epochs, batches, loss, validation F1), or nothing at all."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class TrainingProgress:
    """Context manager; every method is a no-op when ``enabled`` is false."""

    def __init__(self, *, enabled: bool, epochs: int) -> None:
        self._bar = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            if enabled
            else None
        )
        self._epochs = epochs
        self._task: TaskID | None = None

    def __enter__(self) -> TrainingProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start_epoch(self, epoch: int, batches: int) -> None:
        """A fresh bar for ``epoch`` with ``batches`` steps."""
        if self._bar is not None:
            self._task = self._bar.add_task(
                f"epoch {epoch}/{self._epochs}", total=batches, status=""
            )

    def step(self, loss: float) -> None:
        """One batch done, with its running mean loss."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, status=f"loss {loss:.4f}")

    def end_epoch(self, loss: float, f1: float, best: bool) -> None:
        """Show the epoch's loss and validation micro-F1."""
        if self._bar is not None and self._task is not None:
            mark = " *best*" if best else ""
            self._bar.update(self._task, status=f"loss {loss:.4f}  val micro-F1 {f1:.4f}{mark}")
