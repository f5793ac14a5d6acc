"""The written contract between models and the rest of s2r.

* :class:`ImageTranslator`, :class:`LabelTranslator` and :class:`SegmenterModel`
  are the interfaces that ``translate``, ``fid`` and ``segment-eval`` rely on;
  ``register_model`` checks a model's class against the one for its kind when
  the model registers, so a missing method fails at import, naming the model.
* :class:`TrainTask` and :class:`Phase` are what a model hands to the training loop.

A model file subclasses :class:`TrainTask`: it owns the networks, the
optimisers, the data source and a loss object, and describes its update
*phases* (e.g. ``D`` then ``G``). The loop in ``s2rcli/training/loop.py`` only
iterates phases, so it fits unpaired GANs, paired models, label-to-image models
and models with auxiliary networks (a segmenter trained alongside) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from ..data.source import DataSource


@runtime_checkable
class ImageTranslator(Protocol):
    """An image-to-image model (``input_kind="image"``): synthetic image -> realistic image.

    ``stride``: input sides must be multiples of it (``translate`` pads to it).
    """

    stride: int

    def translate(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """``x``: Bx3xHxW in [-1, 1]; ``direction`` ``a2b`` (synthetic -> real) or ``b2a``."""
        ...

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        """Load the networks from a checkpoint's ``state_dicts`` (EMA weights when asked and present)."""
        ...


@runtime_checkable
class LabelTranslator(Protocol):
    """A label-to-image model (``input_kind="label"``): label map (+ noise) -> realistic image."""

    stride: int
    label_space: str
    num_classes: int

    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None,
                 z: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: int64 BxHxW in the model's label space (255 = ignore) -> Bx3xHxW in [-1, 1]."""
        ...

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        ...


@runtime_checkable
class SegmenterModel(Protocol):
    """A segmenter: Bx3xHxW in [-1, 1] -> logits BxCxHxW at the input size.

    A segmenter without ``load_s2r_state_dicts`` loads ``state_dicts["model"]``.
    """

    num_classes: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...


CONTRACTS: dict[tuple[str, str], type] = {
    ("translation", "image"): ImageTranslator,
    ("translation", "label"): LabelTranslator,
    ("segmenter", "image"): SegmenterModel,
}


def required_methods(protocol: type) -> list[str]:
    """The methods a class must define to satisfy ``protocol`` (its attributes are set per instance)."""
    return sorted(name for name, value in vars(protocol).items()
                  if callable(value) and not name.startswith("_"))


def missing_methods(cls: type, kind: str, input_kind: str) -> list[str]:
    """Methods of the contract for ``(kind, input_kind)`` that ``cls`` lacks."""
    protocol = CONTRACTS.get((kind, input_kind))
    if protocol is None:
        return []
    return [name for name in required_methods(protocol) if not callable(getattr(cls, name, None))]


@dataclass(frozen=True)
class Phase:
    """One optimisation phase of a step.

    Args:
        name: passed to :meth:`TrainTask.loss`, and the prefix of logged terms.
        optimizer: key into ``TrainTask.optimizers``.
        nets: the networks this phase trains; the loop freezes the others'
            parameters while it runs, so no gradient is wasted on them.
        every: run the phase only on steps where ``step % every == 0``
            (lazy regularisers such as R1 every 4 steps).
    """

    name: str
    optimizer: str
    nets: tuple[str, ...]
    every: int = 1


@dataclass
class TrainTask:
    """The contract between a model and the loop.

    Attributes:
        model_name: registry name, stored in the checkpoint.
        model_kwargs: constructor kwargs, stored so inference can rebuild it.
        model: the registered module (holds every network as a submodule).
        nets: name -> network; every one is saved in the checkpoint.
        phases: run in order at each step.
        optimizers / schedulers: keyed by name; schedulers step once a step.
        data: the batch source.
        ema: EMA copy name -> source net name, e.g. ``{"G_ema": "G"}``.
        label_space: recorded in the checkpoint.
        monitor: the logged term whose running mean picks the ``best`` checkpoint.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    model: nn.Module
    nets: dict[str, nn.Module]
    phases: list[Phase]
    optimizers: dict[str, torch.optim.Optimizer]
    data: DataSource
    schedulers: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, str] = field(default_factory=dict)
    label_space: str | None = None
    monitor: str | None = None

    def loss(self, phase: str, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Named loss terms for ``phase``; ``"loss"`` is the total that is back-propagated."""
        raise NotImplementedError  # abstract: each model implements it

    def to_device(self, batch: Any, device: torch.device) -> Any:
        if torch.is_tensor(batch):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self.to_device(v, device) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v, device) for v in batch)
        return batch

    def samples(self, batch: Any) -> torch.Tensor | None:
        """An image grid (3xHxW in [0, 1]) for the sample observer, or ``None``."""
        return None
