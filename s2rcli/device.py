"""Where a run computes: the user's ``--device`` choice as a ``torch.device``, and this
process's place in a data-parallel group (:class:`DistInfo`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .errors import S2RError


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda:N`` must exist."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", choice):
        if not torch.cuda.is_available():
            raise S2RError(f"--device {choice} was asked for, but no CUDA device is visible", hint="use --device cpu")
        index = int(choice.split(":")[1]) if ":" in choice else 0
        if index >= torch.cuda.device_count():
            raise S2RError(
                f"--device {choice}: only {torch.cuda.device_count()} CUDA device(s) are visible",
                hint="pick an index below that",
            )
        return torch.device(choice)
    raise S2RError(f"unknown device {choice!r}", hint="use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class DistInfo:
    """This process's rank in a ``torchrun`` group (the defaults: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1
