"""A rich progress bar for training: loss, accuracy, images/s and ETA, refreshed cheaply."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """One bar per epoch; fields are refreshed every `every` steps, not at every step."""

    def __init__(self, console: Console | None = None, enabled: bool = True, every: int = 20):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.every = max(1, every)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}"),
            TextColumn("{task.fields[ips]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not enabled or not sys.stderr.isatty(),
        )
        self.task: TaskID | None = None
        self._t0 = time.perf_counter()
        self._seen0 = 0

    @property
    def live(self) -> bool:
        """Whether a bar is drawn: only then are the running sums read during an epoch."""
        return not self.progress.disable

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {epoch + 1}/{epochs}", total=total, completed=done, loss=0.0, acc=0.0, ips=0.0
        )
        self._t0, self._seen0 = time.perf_counter(), 0

    def step(self, batch: int, seen: float, loss_sum: float, correct: float, epoch_seen: float):
        if self.task is None or batch % self.every:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.progress.update(
            self.task,
            completed=batch,
            loss=loss_sum / max(epoch_seen, 1),
            acc=correct / max(epoch_seen, 1),
            ips=(seen - self._seen0) / elapsed,
        )

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)
