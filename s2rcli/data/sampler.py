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


class SmartPairSampler(PairSampler):
    """The smart batch loader (paper 001): a real image uniformly, then one of its SP-Feat neighbours.

    Args:
        neighbors: ``n_real x K`` synthetic dataset indices; row ``i`` belongs to
            real dataset index ``real_indices[i]``.
        probs: ``n_real x K`` per-row sampling probabilities (rows sum to 1).
        n_synthetic: size of the synthetic dataset.
        real_indices: real dataset index of each row (default: row ``i`` is real image ``i``).
    """

    def __init__(self, neighbors, probs, *, n_synthetic: int, real_indices=None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        neighbors = np.asarray(neighbors, dtype=np.int64)
        probs = np.asarray(probs, dtype=np.float64)
        if neighbors.ndim != 2 or neighbors.shape != probs.shape or neighbors.shape[1] == 0:
            raise ValueError(f"neighbors {neighbors.shape} and probs {probs.shape} must both be n_real x K")
        if neighbors.size and (neighbors.min() < 0 or neighbors.max() >= n_synthetic):
            raise ValueError("neighbour indices outside the synthetic dataset")
        if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("each row of probs must be non-negative and sum to 1")
        real_indices = np.arange(len(neighbors)) if real_indices is None else np.asarray(real_indices, np.int64)
        if real_indices.shape != (len(neighbors),):
            raise ValueError("real_indices needs one entry per row of neighbors")
        super().__init__(n_synthetic, len(neighbors), seed=seed, rank=rank, world_size=world_size)
        self.neighbors = neighbors
        self.real_indices = real_indices
        cdf = np.cumsum(probs, axis=1)
        self.cdf = cdf / cdf[:, -1:]  # exact 1.0 at the end, so a uniform draw always lands in a column

    def draw(self, k: int) -> tuple[int, int]:
        rng = self._rng(k)
        row = int(rng.integers(self.n_real))
        col = int(np.searchsorted(self.cdf[row], rng.random(), side="right"))
        col = min(col, self.neighbors.shape[1] - 1)
        return int(self.neighbors[row, col]), int(self.real_indices[row])


def _name_positions(names_in_pairs, dataset_names, domain: str, pairs_path) -> np.ndarray:
    """Dataset index of every name in the pairs file; S2RError if the two sets differ."""
    from ..errors import S2RError

    positions = {str(name): i for i, name in enumerate(dataset_names)}
    missing = [str(n) for n in names_in_pairs if str(n) not in positions]
    extra = len(positions) - (len(names_in_pairs) - len(missing))
    if missing or extra or len(set(map(str, names_in_pairs))) != len(names_in_pairs):
        detail = []
        if missing:
            detail.append(f"{len(missing)} of its {domain} names are not in the {domain} dataset "
                          f"(e.g. {', '.join(missing[:3])})")
        if extra > 0:
            detail.append(f"{extra} {domain} images have no entry in it")
        raise S2RError(
            f"pairs file {pairs_path} does not match the {domain} dataset: " + "; ".join(detail or ["duplicate names"]),
            hint="the pairs were computed for other data; run `s2r prepare spfeat` and `s2r prepare pairs` on these datasets",
        )
    return np.asarray([positions[str(n)] for n in names_in_pairs], np.int64)


def make_pair_sampler(smart: bool, pairs_path, synthetic, real, *, seed: int = 0, rank: int = 0,
                      world_size: int = 1) -> PairSampler:
    """The pair sampler for training: smart (SP-Feat pairs) or uniformly random.

    ``synthetic`` and ``real`` are datasets with ``names``; for the smart sampler
    the names in ``pairs_path`` are mapped onto them, and a mismatch (pairs made
    for other data) is an :class:`~s2rcli.errors.S2RError`.
    """
    if not smart:
        return RandomPairSampler(len(synthetic), len(real), seed=seed, rank=rank, world_size=world_size)
    from ..errors import S2RError
    from .pairing import load_pairs

    if pairs_path is None:
        raise S2RError("--smart-batch needs a pairs file",
                       hint="compute one with `s2r prepare pairs ... --out pairs.npz` and pass --pairs pairs.npz")
    pairs = load_pairs(pairs_path)
    real_idx = _name_positions(pairs.real_names, real.names, "real", pairs_path)
    syn_idx = _name_positions(pairs.synthetic_names, synthetic.names, "synthetic", pairs_path)
    return SmartPairSampler(syn_idx[pairs.neighbors], pairs.probs, n_synthetic=len(synthetic),
                            real_indices=real_idx, seed=seed, rank=rank, world_size=world_size)
