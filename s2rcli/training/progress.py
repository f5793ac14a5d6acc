"""The training progress bar, an observer: throttled, quiet-aware, rank-0 only."""

from __future__ import annotations

import time

import torch
from rich.progress import Progress, TextColumn

from ..console import make_progress, settings
from .loop import Observer, TrainState


class ProgressObserver(Observer):
    """Step, it/s, ETA and the main loss terms; ``.item()`` only when it redraws."""

    def __init__(self, terms: tuple[str, ...] = (), refresh_seconds: float = 0.5):
        self.terms = terms
        self.refresh_seconds = refresh_seconds
        self.progress: Progress | None = None
        self._last = 0.0
        self._latest: dict[str, torch.Tensor] = {}
        self._t_start = 0.0
        self._step_start = 0

    def on_train_start(self, state: TrainState) -> None:
        if settings.quiet or not state.dist.is_main:
            return
        self.progress = make_progress(TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[losses]}"))
        self.progress.start()
        self._task = self.progress.add_task("train", total=state.total_steps, completed=state.step, rate="", losses="")
        self._t_start, self._step_start = time.monotonic(), state.step

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        if self.progress is None:
            return
        self._latest = terms
        now = time.monotonic()
        if now - self._last < self.refresh_seconds and state.step < state.total_steps:
            return
        self._last = now
        rate = (state.step - self._step_start) / max(now - self._t_start, 1e-9)
        shown = self.terms or tuple(k for k in terms if k.endswith("/loss"))
        losses = "  ".join(f"{k}={float(terms[k]):.3f}" for k in shown if k in terms)
        self.progress.update(self._task, completed=state.step, rate=f"{rate:.2f} it/s", losses=losses)
        self.progress.refresh()

    def on_train_end(self, state: TrainState, status: str) -> None:
        if self.progress is not None:
            self.progress.update(self._task, completed=state.step)
            self.progress.refresh()
            self.progress.stop()
            self.progress = None
