"""Observers that write to the run folder: checkpoints (latest, best and kept snapshots)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..console import info
from ..checkpoint import save_checkpoint
from .loop import Observer, TrainState


class CheckpointObserver(Observer):
    """Saves ``checkpoints/latest.pt`` every ``every`` steps and when training ends
    (completed or Ctrl-C), and ``checkpoints/best.pt`` whenever the running mean
    of ``monitor`` (a logged term such as ``"G/recon_x"``) improves on the best so far.
    With ``keep_every`` > 0 it also keeps ``checkpoints/step_NNNNNN.pt`` every that
    many steps, so that one long run shows what a shorter one would have given
    (``s2r translate --checkpoint RUN/checkpoints/step_001500.pt ...``).

    These files belong to the run, so they are replaced; files outside the run
    folder are never touched.
    """

    def __init__(self, run_dir: Path, every: int = 1000, monitor: str | None = None, keep_every: int = 0):
        self.folder = Path(run_dir) / "checkpoints"
        self.every = max(1, int(every))
        self.keep_every = max(0, int(keep_every))
        self.monitor = monitor
        self._sum: torch.Tensor | float = 0.0  # a tensor on the training device: read (a host sync) only when saving
        self._count = 0
        self.best = math.inf
        self.saved_steps: list[int] = []

    @property
    def latest(self) -> Path:
        return self.folder / "latest.pt"

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        if self.monitor and self.monitor in terms:
            value = terms[self.monitor]
            self._sum = self._sum + (value.detach() if torch.is_tensor(value) else float(value))
            self._count += 1
        if state.step % self.every == 0:
            self._save(state)
        elif self._keeps(state.step) and state.dist.is_main:  # a snapshot only: latest.pt and best.pt keep their rhythm
            save_checkpoint(state.checkpoint(), self._kept(state.step), overwrite=True)

    def on_train_end(self, state: TrainState, status: str) -> None:
        if status in ("completed", "interrupted") and state.step not in self.saved_steps:
            self._save(state)
        if status == "interrupted" and state.dist.is_main:
            info(f"interrupted at step {state.step}; resume with --resume (checkpoint: {self.latest})")

    def _keeps(self, step: int) -> bool:
        return self.keep_every > 0 and step % self.keep_every == 0

    def _kept(self, step: int) -> Path:
        return self.folder / f"step_{step:06d}.pt"

    def _save(self, state: TrainState) -> None:
        if not state.dist.is_main:
            return
        ckpt = state.checkpoint()
        save_checkpoint(ckpt, self.latest, overwrite=True)
        if self._keeps(state.step):
            save_checkpoint(ckpt, self._kept(state.step), overwrite=True)
        self.saved_steps.append(state.step)
        if self._count:
            mean = float(self._sum) / self._count
            self._sum, self._count = 0.0, 0
            if mean < self.best:
                self.best = mean
                ckpt["extra"] = {"monitor": self.monitor, "value": mean}
                save_checkpoint(ckpt, self.folder / "best.pt", overwrite=True)


class SampleObserver(Observer):
    """Writes ``samples/step_NNNNNN.png`` every ``every`` steps, at the start and at the end.

    The grid comes from ``task.samples(batch)`` on a fixed batch (the same images
    every time, so grids are comparable across steps); it uses the EMA generator
    when the task accepts one (``samples(batch, G=...)``).
    """

    def __init__(self, run_dir: Path, batch, every: int = 500):
        self.folder = Path(run_dir) / "samples"
        self.batch = batch
        self.every = max(1, int(every))
        self.written: list[Path] = []

    def on_train_start(self, state: TrainState) -> None:
        if state.step == 0:
            self._write(state)

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        if state.step % self.every == 0:
            self._write(state)

    def on_train_end(self, state: TrainState, status: str) -> None:
        if status in ("completed", "interrupted") and state.step % self.every:
            self._write(state)

    def _write(self, state: TrainState) -> None:
        if not state.dist.is_main or self.batch is None:
            return
        import inspect

        from PIL import Image

        from ..utils.atomic import atomic_save_image

        task = state.task
        batch = task.to_device(self.batch, state.device)
        kwargs = {}
        ema = state.ema_nets.get("G_ema")
        if ema is not None and "G" in inspect.signature(task.samples).parameters:
            kwargs["G"] = ema
        grid = task.samples(batch, **kwargs)
        if grid is None:
            return
        array = (grid.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
        path = self.folder / f"step_{state.step:06d}.png"
        atomic_save_image(Image.fromarray(array), path)
        self.written.append(path)


def smooth(values: list[float], factor: float) -> list[float]:
    """TensorBoard-style exponential smoothing, debiased at the start.

    The UNIT + smart batch paper's Fig. 7 uses a weight of 0.5.
    """
    out, last, weight = [], 0.0, 0.0
    for v in values:
        last = factor * last + (1 - factor) * v
        weight = factor * weight + (1 - factor)
        out.append(last / weight)
    return out


class LossPlotObserver(Observer):
    """Plots the G and D totals from ``metrics.jsonl`` to ``losses.png`` (raw and smoothed),
    every ``every`` steps (the checkpoint interval) and when training ends."""

    def __init__(self, run_dir: Path, every: int = 1000, terms: tuple[str, ...] = ("G/loss", "D/loss"),
                 smoothing: float = 0.5):
        self.run_dir = Path(run_dir)
        self.every = max(1, int(every))
        self.terms = terms
        self.smoothing = smoothing

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        if state.step % self.every == 0:
            self.plot(state)

    def on_train_end(self, state: TrainState, status: str) -> None:
        if status in ("completed", "interrupted"):
            self.plot(state)

    def plot(self, state: TrainState) -> Path | None:
        if not state.dist.is_main:
            return None
        from .stats import MetricsLog

        records = MetricsLog(self.run_dir / "metrics.jsonl").read()
        series = {t: [(r["step"], r[t]) for r in records if isinstance(r.get(t), (int, float))] for t in self.terms}
        series = {t: s for t, s in series.items() if s}
        if not series:
            return None
        return plot_losses(series, self.run_dir / "losses.png", smoothing=self.smoothing,
                           title=f"{state.task.model_name}, step {state.step}")


def plot_losses(series: dict[str, list[tuple[int, float]]], path: Path, *, smoothing: float = 0.5,
                title: str = "") -> Path:
    """One panel per term: the logged values (faint) and their smoothed curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..utils.atomic import atomic_write_with

    fig = Figure(figsize=(5 * len(series), 3.2), dpi=100)
    for i, (term, points) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), i + 1)
        steps, values = [p[0] for p in points], [p[1] for p in points]
        color = "tab:blue" if term.startswith("G") else "tab:red"
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
        ax.plot(steps, smooth(values, smoothing), color=color, linewidth=1.8, label=f"smoothed ({smoothing})")
        ax.set_title(f"{term}" + (f" - {title}" if title and i == 0 else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return atomic_write_with(path, lambda fh: fig.savefig(fh, format="png"))
