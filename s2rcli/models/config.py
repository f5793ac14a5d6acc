"""Typed configuration: the one place where defaults live.

* :class:`TrainConfig` holds the training engine's defaults. A model's training
  options are a subclass that adds its own fields (``UNITTrain``, ``SISTrain``, ...).
* A model's network settings are a dataclass whose fields are the network's
  constructor arguments (``UNITConfig``, ...); its defaults are the paper's.
* A :class:`Preset` pairs the two. Presets are instances, not dicts::

    PRESETS = {"tiny": Preset(UNITConfig(channels=16), UNITTrain(size=[64, 128], steps=300)),
               "paper": Preset(UNITConfig(), UNITTrain(steps=200000))}

The training engine resolves a run's config from a preset (see
``s2rcli/training/config.py``); the registry builds a model through its config
class, so an unknown setting fails with the valid names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """The engine's training options, shared by every model."""

    steps: int = 100000               # optimisation steps
    batch_size: int = 1               # per process (DDP multiplies it by the number of processes)
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    accumulate: int = 1               # micro-batches summed before each update (effective batch x N)
    amp: str | None = None            # None, "bf16" or "fp16" (CUDA only)
    ema_decay: float = 0.999          # EMA copies (G_ema), used by `s2r translate` by default
    workers: int = 0                  # DataLoader worker processes
    checkpoint_every: int = 1000
    keep_every: int = 0               # also keep checkpoints/step_NNNNNN.pt every N steps (0: only latest/best)
    sample_every: int = 500
    log_every: int = 10
    samples: int = 4                  # images per domain in the sample grids
    # The fast path (training/loop.py: FastPath; docs/performance.md). null: decided by the device when
    # the run starts, and recorded in config.json.
    channels_last: bool | None = None  # NHWC memory format; null: on CUDA (on CPU it did not pay)
    cpu_bf16: bool | None = None      # bf16 autocast on CPU; null: where the CPU has native bf16 (AVX512-BF16, AMX)
    optimizer_impl: str | None = None  # foreach, fused or for-loop optimiser kernels; null: foreach on CPU, fused on CUDA
    compile: bool = False             # torch.compile each phase's loss (forward and backward)
    compile_mode: str = "default"     # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, ...
    cache_mb: float = 1024            # decoded images the data source keeps in memory (MB, split across workers; 0: none)
    prefetch: int = 2                 # batches each data worker loads ahead (with workers > 0)
    loss: dict[str, float] = field(default_factory=dict)  # term -> weight; each model sets its defaults
    size: list[int] | None = None     # the default training size [H, W] (becomes data.size)
    label_space: str = "cityscapes19"  # the label space a run trains in (becomes the top-level label_space)


@dataclass(frozen=True)
class Preset:
    """A named setting of a model: its network config and its training config."""

    model: Any
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        """``{"model": {...}, "train": {...}}`` as plain JSON-able dicts."""
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}


def field_names(config_class: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class)]
