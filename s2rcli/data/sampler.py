"""Pair samplers: which (synthetic, real) pair each training sample uses.

Every draw is a pure function of ``(seed, k)`` where ``k`` is the global draw
index, so a sampler is deterministic, resumes bit-exactly from its position,
and gives each DDP rank a disjoint share (rank r takes k = r, r + W, r + 2W, ...).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np


class PairSampler:
    """Endless iterator of ``(synthetic_index, real_index)``; resumable."""

    def __init__(self, n_synthetic: int, n_real: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        if n_synthetic <= 0 or n_real <= 0:
            raise ValueError("both domains need at least one image")
        self.n_synthetic, self.n_real = int(n_synthetic), int(n_real)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.position = 0  # draws made by this rank

    def _rng(self, k: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, k])

    def draw(self, k: int) -> tuple[int, int]:
        raise NotImplementedError  # abstract

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while True:
            k = self.position * self.world_size + self.rank
            self.position += 1
            yield self.draw(k)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if state.get("kind") not in (None, type(self).__name__):
            raise ValueError(f"sampler state is for {state['kind']}, not {type(self).__name__}")
        self.seed = int(state.get("seed", self.seed))
        self.position = int(state["position"])


class RandomPairSampler(PairSampler):
    """The baseline: a uniformly random synthetic image with a uniformly random real one."""

    def draw(self, k: int) -> tuple[int, int]:
        rng = self._rng(k)
        return int(rng.integers(self.n_synthetic)), int(rng.integers(self.n_real))
