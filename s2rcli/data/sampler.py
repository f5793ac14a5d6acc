"""Pair samplers: which (synthetic, real) pair each training sample uses.

Every draw is a pure function of ``(seed, k)`` where ``k`` is the global draw
index, so a sampler is deterministic, resumes bit-exactly from its position,
and gives each DDP rank a disjoint share (rank r takes k = r, r + W, r + 2W, ...).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from . import io
from ..console import warn
from ..errors import S2RError
from .pairing import PairsFile, load_pairs


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
    """The smart batch loader (UNIT + smart batch, docs/papers.md): a real image uniformly, then one of its SP-Feat neighbours.

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


def _name_positions(names_in_pairs, dataset_names, domain: str, pairs_path, skipped=()) -> np.ndarray:
    """Dataset index of every name in the pairs file; S2RError if the two sets differ.

    Names in ``skipped`` (left out of the SP-Feat file as unreadable) may be in the dataset
    without an entry in the pairs file.
    """
    positions = {str(name): i for i, name in enumerate(dataset_names)}
    missing = [str(n) for n in names_in_pairs if str(n) not in positions]
    listed = {str(n) for n in names_in_pairs}
    tolerated = sum(1 for name in {str(n) for n in skipped} if name in positions and name not in listed)
    extra = len(positions) - (len(names_in_pairs) - len(missing)) - tolerated
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
    if pairs_path is None:
        raise S2RError("--smart-batch needs a pairs file",
                       hint="compute one with `s2r prepare pairs ... --out pairs.npz` and pass --pairs pairs.npz")
    pairs, syn_idx, real_idx = check_pairs_file(pairs_path, synthetic, real)
    return SmartPairSampler(syn_idx[pairs.neighbors], pairs.probs, n_synthetic=len(synthetic),
                            real_indices=real_idx, seed=seed, rank=rank, world_size=world_size)


def check_pairs_file(pairs_path, synthetic, real) -> tuple[PairsFile, np.ndarray, np.ndarray]:
    """Load a pairs file and check it against the datasets trained on: the names (mapped onto the
    datasets' order) and the provenance (:func:`check_provenance`). Returns the pairs and the
    synthetic and real dataset index of each of its names."""
    pairs = load_pairs(pairs_path)
    real_idx = _name_positions(pairs.real_names, real.names, "real", pairs_path, pairs.real_skipped)
    syn_idx = _name_positions(pairs.synthetic_names, synthetic.names, "synthetic", pairs_path,
                              pairs.synthetic_skipped)
    check_provenance(pairs, synthetic, real)
    return pairs, syn_idx, real_idx


_WARNED_UNCHECKED: set[str] = set()  # pairs files already reported as unverifiable in this process


def check_provenance(pairs: PairsFile, synthetic, real) -> None:
    """Refuse a pairs file computed from other files than the datasets trained on, though the names match.

    The pairs file records, per side, the fingerprint of the image files its SP-Feat file was
    computed from (names and byte sizes, :func:`s2rcli.data.io.dataset_fingerprint`); each is
    compared with the same fingerprint of the dataset's files under those names. A pairs file
    written before fingerprints were recorded cannot be checked: a warning says so (and names the
    specs it records when they differ from the datasets'). Datasets that do not expose their files
    are not checked.
    """
    if not pairs.has_fingerprints:
        if str(pairs.path) in _WARNED_UNCHECKED:
            return
        _WARNED_UNCHECKED.add(str(pairs.path))
        differ = [f"{side} {recorded} (training on {getattr(ds, 'spec', '?')})"
                  for side, recorded, ds in (("real", pairs.real_spec, real),
                                             ("synthetic", pairs.synthetic_spec, synthetic))
                  if recorded and getattr(ds, "spec", None) and str(recorded) != str(ds.spec)]
        warn(f"pairs file {pairs.path} does not record which image files it was computed from (written by an "
             "older s2r), so it cannot be checked against --real and --synthetic"
             + (f"; it records {', '.join(differ)}" if differ else "")
             + "; recompute it with `s2r prepare spfeat` and `s2r prepare pairs` to have it checked")
        return
    for side, recorded, spec, names, dataset in (
            ("real", pairs.real_fingerprint, pairs.real_spec, pairs.real_names, real),
            ("synthetic", pairs.synthetic_fingerprint, pairs.synthetic_spec, pairs.synthetic_names, synthetic)):
        current = io.dataset_fingerprint(dataset, names.tolist())
        if current and current != recorded:
            raise S2RError(
                f"pairs file {pairs.path} was computed from other {side} images than --{side} "
                f"{getattr(dataset, 'spec', '')}: the names match but the files differ (it records {spec or '?'})",
                hint="run `s2r prepare spfeat` and `s2r prepare pairs` on the datasets you train on")
