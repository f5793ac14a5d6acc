"""What a model hands to the training loop.

A model file subclasses :class:`TrainTask`: it owns the networks, the
optimisers, the data source and a loss object, and describes its update
*phases* (e.g. ``D`` then ``G``). The loop in :mod:`s2rcli.training.loop` only
iterates phases, so it fits unpaired GANs, paired models, label-to-image models
and models with auxiliary networks (a segmenter trained alongside) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn


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


class DataSource:
    """An endless, resumable iterator of batches.

    ``state_dict()`` must capture enough to continue the exact same sequence
    after ``load_state_dict()`` (the sampler position, not the RNG object).
    """

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError  # abstract

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


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
