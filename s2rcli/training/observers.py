"""Observers that write to the run folder: checkpoints (latest and best)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..console import info
from .checkpoint import save_checkpoint
from .loop import Observer, TrainState


class CheckpointObserver(Observer):
    """Saves ``checkpoints/latest.pt`` every ``every`` steps and when training ends
    (completed or Ctrl-C), and ``checkpoints/best.pt`` whenever the running mean
    of ``monitor`` (a logged term such as ``"G/recon_x"``) improves on the best so far.

    Both files belong to the run, so they are replaced; files outside the run
    folder are never touched.
    """

    def __init__(self, run_dir: Path, every: int = 1000, monitor: str | None = None):
        self.folder = Path(run_dir) / "checkpoints"
        self.every = max(1, int(every))
        self.monitor = monitor
        self._sum = 0.0
        self._count = 0
        self.best = math.inf
        self.saved_steps: list[int] = []

    @property
    def latest(self) -> Path:
        return self.folder / "latest.pt"

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        if self.monitor and self.monitor in terms:
            self._sum += float(terms[self.monitor])
            self._count += 1
        if state.step % self.every == 0:
            self._save(state)

    def on_train_end(self, state: TrainState, status: str) -> None:
        if status in ("completed", "interrupted") and state.step not in self.saved_steps:
            self._save(state)
        if status == "interrupted" and state.dist.is_main:
            info(f"interrupted at step {state.step}; resume with --resume (checkpoint: {self.latest})")

    def _save(self, state: TrainState) -> None:
        if not state.dist.is_main:
            return
        ckpt = state.checkpoint()
        save_checkpoint(ckpt, self.latest, overwrite=True)
        self.saved_steps.append(state.step)
        if self._count:
            mean = self._sum / self._count
            self._sum, self._count = 0.0, 0
            if mean < self.best:
                self.best = mean
                ckpt["extra"] = {"monitor": self.monitor, "value": mean}
                save_checkpoint(ckpt, self.folder / "best.pt", overwrite=True)
