"""KNN pairing of real and synthetic images by SP-Feat, with use-balancing weights.

The rule is that of the UNIT + smart batch paper, section 3.2.2.

Real images are the queries; synthetic images are the candidates.

The rule, precisely:

1. **Candidates.** The synthetic images are ranked by Euclidean distance to
   each real image (exact, on the concatenated SP-Feat vectors; the levels
   are not re-weighted; equal distances by synthetic index). See *Speed* below.
2. **Quota.** A synthetic image may be listed by at most ``max_uses`` real
   images. By default ``max_uses = max(1, ceil(overuse * n_real * K / n_synthetic))``
   with ``overuse = 2``: twice the uses every synthetic image would get if the
   ``n_real * K`` slots were spread evenly (4 for 3,000 real, 25,000 synthetic, K = 15).
3. **Greedy fill, nearest first.** The (real, synthetic) candidate edges are
   visited in increasing distance (ties: real index, then rank). An edge is
   taken if its real image has fewer than ``K`` neighbours and its synthetic
   image is below the quota. So the closest pairs claim a synthetic image
   first, and a real image whose neighbour is used up gets the next nearest
   instead (a *replacement*). The search starts with each real image's
   ``16 K`` nearest and goes 4x deeper, for the real images still short, until
   they are full or ``search_depth`` (default: every synthetic image) is reached.
4. **Fallback.** A real image still short of ``K`` at ``search_depth`` takes
   its nearest candidates not yet listed regardless of the quota (counted as
   ``over_quota``), so every real image has exactly ``K``. With the default
   depth this happens only if ``max_uses * n_synthetic < n_real * K``.
5. **Weights.** ``count[j]`` = the number of real images listing synthetic
   image ``j``; its weight is ``1 / count[j]`` (0 if unused). Each real image's
   neighbours are sorted by distance and sampled with
   ``probs[i] = w[neighbors[i]] / sum(w[neighbors[i]])``.

Coverage is the share of synthetic images with ``count > 0``.

**Speed and memory** (``benchmarks/bench_spfeat.py --scale``; figures in
``docs/performance.md``). The ranking never forms the real x synthetic distance matrix:
real images are ranked in chunks of similar ones (:data:`QUERY_BUDGET` bytes of scores at
a time), so memory does not grow with the number of real images. Each chunk is scored
against a :data:`PROJECTION_DIMS`-dimensional PCA projection of the synthetic vectors,
whose distances are a lower bound of the true ones (an orthonormal projection never
lengthens a vector; its float32 rounding is bounded and allowed for): a first set of
candidates gives an upper bound of each row's ``m``-th true distance, and every synthetic
image whose bound lies below it is then measured in float64, so the ``m`` nearest are
exact, not approximate. Deep searches (``m`` of at least ``n_synthetic / 64``) measure
every column with one matrix product instead, and keep only the edges to images still
below the quota. The greedy fill is vectorised: edges whose real and synthetic image
cannot reach their limits within a block of edges are taken at once, only the contested
ones one by one, with the same outcome as the edge-by-edge rule. The manhattan and cosine
metrics rank with scikit-learn's brute force.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import io
from ..errors import S2RError
from ..utils.atomic import atomic_write_with

DEFAULT_K = 15
DEFAULT_CANDIDATE_FACTOR = 16  # the first search: 16 K candidates per real image
SEARCH_GROWTH = 4  # each later round looks 4x deeper, for the real images still short
DEFAULT_OVERUSE = 2.0
METRICS = ("euclidean", "manhattan", "cosine")


@dataclass
class PairResult:
    """The neighbour lists and everything reported about them."""

    neighbors: np.ndarray  # n_real x K int64, synthetic indices, nearest first
    distances: np.ndarray  # n_real x K float32
    probs: np.ndarray  # n_real x K float64, rows sum to 1
    synthetic_weights: np.ndarray  # n_synthetic float64: 1/count, 0 if unused
    use_counts: np.ndarray  # n_synthetic int64
    k: int
    max_uses: int
    candidates: int  # the deepest rank any real image's search reached
    metric: str
    replaced: int  # slots not filled by the plain K nearest (their image was at quota)
    over_quota: int  # slots filled past the quota by the fallback
    plain_use_counts: np.ndarray = field(repr=False, default=None)  # counts for the plain K nearest
    plain_distances: np.ndarray = field(repr=False, default=None)  # n_real x K: distances of the plain K nearest

    @property
    def coverage(self) -> float:
        return float((self.use_counts > 0).mean())

    @property
    def plain_coverage(self) -> float:
        return float((self.plain_use_counts > 0).mean())


def default_max_uses(n_real: int, n_synthetic: int, k: int, overuse: float = DEFAULT_OVERUSE) -> int:
    """``max(1, ceil(overuse * n_real * K / n_synthetic))``: the quota per synthetic image."""
    return max(1, math.ceil(overuse * n_real * k / n_synthetic - 1e-9))


PROJECTION_DIMS = 64  # the PCA projection that bounds distances from below (speed only: results are exact)
QUERY_BUDGET = 64 * 2**20  # bytes of (real chunk x synthetic) scores held at a time
EXACT_BUDGET = 32 * 2**20  # bytes of gathered synthetic rows per exact-distance batch
DENSE_DEPTH = 64  # queries of at least n_synthetic / DENSE_DEPTH neighbours measure every column


class NearestSynthetic:
    """Exact nearest synthetic rows of real rows, ranked by (distance, synthetic index).

    ``query(real, m)`` returns ``(distances float32 n x m, indices int64 n x m)``. Euclidean
    distances are computed in float64 from the float32 vectors (differences, or the dot-product
    formula where every column is measured). See the module docstring.
    """

    def __init__(self, synthetic: np.ndarray, metric: str = "euclidean", dims: int = PROJECTION_DIMS):
        if metric not in METRICS:
            raise S2RError(f"unknown metric {metric!r}", hint="choose one of " + ", ".join(METRICS))
        self.metric = metric
        self.synthetic = np.ascontiguousarray(synthetic, np.float32)
        self.n, d = self.synthetic.shape
        if metric != "euclidean":
            from sklearn.neighbors import NearestNeighbors  # only the manhattan and cosine metrics need it

            self._sk = NearestNeighbors(algorithm="brute", metric=metric).fit(self.synthetic)
            return
        self.dims = int(dims)
        self.projected = None  # built on first use (_prepare_projection)

    def _prepare_projection(self) -> None:
        """An orthonormal projection onto the main directions of the synthetic vectors (PCA of an
        evenly spaced sample); with no fewer dimensions than the vectors, the identity. Projections
        are computed in float64 and only then rounded, so the rounding is bounded (``_unit``)."""
        d = self.synthetic.shape[1]
        self.mean = self.synthetic.mean(axis=0, dtype=np.float64)
        if d <= self.dims:
            self.basis = np.eye(d)
        else:
            sample = self.synthetic[:: max(1, self.n // 20000)] - self.mean
            _, vectors = np.linalg.eigh(sample.T @ sample)  # ascending eigenvalues: the last are the main ones
            self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :self.dims])  # d x r, orthonormal columns
        self.projected = torch.from_numpy(self._project(self.synthetic))  # n x r float32
        self.projected_sq = (self.projected.double() ** 2).sum(1).float()
        self._norm_max = float(self.projected_sq.max().sqrt()) if self.n else 0.0
        # |computed - true| of a projected squared distance is at most this times (|q| + |s|)^2:
        # float32 rounding of the coordinates, of the r-term dot product and of the two norms.
        self._unit = 4 * (self.basis.shape[1] + 4) * float(np.finfo(np.float32).eps)

    def _project(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.basis.shape[1]), np.float32)
        step = max(1, EXACT_BUDGET // (8 * max(1, rows.shape[1])))
        for start in range(0, len(rows), step):
            out[start:start + step] = (rows[start:start + step] - self.mean) @ self.basis
        return out

    @property
    def _sq64(self) -> np.ndarray:
        """Each synthetic vector's squared length in float64 (made once, a block of rows at a time)."""
        if getattr(self, "_sq64_cache", None) is None:
            s32 = torch.from_numpy(self.synthetic)
            out = np.empty(self.n, np.float64)
            step = max(1, EXACT_BUDGET // (8 * max(1, self.synthetic.shape[1])))
            for start in range(0, self.n, step):
                block = s32[start:start + step].double()
                out[start:start + step] = (block * block).sum(1).numpy()
            self._sq64_cache = out
        return self._sq64_cache

    def _gather64(self, cols: np.ndarray) -> torch.Tensor:
        """Synthetic rows ``cols`` in float64: gathered from the float32 vectors, then widened (exactly),
        so no float64 copy of every vector is kept and half the bytes are gathered. The result lives in
        buffers reused by the next call (fresh memory for each batch cost more than the gathering)."""
        n, d = len(cols), self.synthetic.shape[1]
        if getattr(self, "_buffers", None) is None or self._buffers[0].shape[0] < n:
            self._buffers = (torch.empty((max(n, 1024), d), dtype=torch.float32),
                             torch.empty((max(n, 1024), d), dtype=torch.float64))
        b32, b64 = self._buffers[0][:n], self._buffers[1][:n]
        torch.index_select(torch.from_numpy(self.synthetic), 0, torch.from_numpy(cols), out=b32)
        return b64.copy_(b32)

    def _float64(self) -> torch.Tensor:
        """All the synthetic vectors in float64, for the searches that measure every column (made once,
        only when one does)."""
        if getattr(self, "_s64", None) is None:
            self._s64 = torch.from_numpy(self.synthetic).double()
        return self._s64

    def exact_sq(self, rows: np.ndarray, which: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Squared distances, float64, between ``rows[which[p]]`` (float64) and synthetic ``cols[p]``
        for each pair p, ``which`` sorted: ``|q|^2 + |s|^2 - 2 q.s``, each row's dot products one
        float64 matrix-vector product over its gathered candidates (error about 1e-14)."""
        out = np.empty(len(cols), np.float64)
        if not len(cols):
            return out
        q = torch.from_numpy(rows)
        q_sq = np.einsum("ij,ij->i", rows, rows)
        bounds = np.searchsorted(which, np.arange(len(rows) + 1))
        per_batch = max(1, EXACT_BUDGET // (8 * max(1, self.synthetic.shape[1])))
        start_row = 0
        while start_row < len(rows):  # batches of whole rows, about EXACT_BUDGET bytes of gathered rows each
            end_row = int(np.searchsorted(bounds, bounds[start_row] + per_batch, side="right")) - 1
            end_row = min(len(rows), max(end_row, start_row + 1))
            lo, hi = int(bounds[start_row]), int(bounds[end_row])
            gathered = self._gather64(cols[lo:hi])
            dots = torch.empty(hi - lo, dtype=torch.float64)
            for i in range(start_row, end_row):
                a, b = int(bounds[i]) - lo, int(bounds[i + 1]) - lo
                if b > a:
                    torch.mv(gathered[a:b], q[i], out=dots[a:b])
            out[lo:hi] = q_sq[which[lo:hi]] + self._sq64[cols[lo:hi]] - 2.0 * dots.numpy()
            start_row = end_row
        return np.maximum(out, 0.0, out=out)

    def query(self, real: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        distances = np.empty((len(real), min(int(m), self.n)), np.float32)
        indices = np.empty(distances.shape, np.int64)
        for rows, dist, idx in self._chunks(real, m):
            distances[rows], indices[rows] = dist, idx
        return distances, indices

    def query_edges(self, real: np.ndarray, m: int, usable: np.ndarray) -> tuple[np.ndarray, ...]:
        """The ``m`` nearest of each row as flat edges ``(row, distance, index)`` in row-major rank order,
        keeping only synthetic images where ``usable`` is true: memory follows the edges kept, not n x m."""
        rows, dists, cols = [], [], []
        for positions, dist, idx in self._chunks(real, m):
            keep = usable[idx]
            rows.append(np.broadcast_to(positions[:, None], idx.shape)[keep])
            dists.append(dist[keep])
            cols.append(idx[keep])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        rows, dists, cols = np.concatenate(rows), np.concatenate(dists), np.concatenate(cols)
        order = np.argsort(rows, kind="stable")  # row-major rank order, whatever order the chunks came in
        return rows[order], dists[order], cols[order]

    def _chunks(self, real: np.ndarray, m: int):
        """``(positions, distances, indices)`` for chunks of the rows of ``real`` (positions: the rows' places)."""
        real = np.ascontiguousarray(real, np.float32)
        m = min(int(m), self.n)
        if self.metric != "euclidean":
            yield np.arange(len(real)), *self._query_sklearn(real, m)
            return
        # Deep queries measure every column (a matrix product beats gathering most of them one by one).
        dense = DENSE_DEPTH * m >= self.n
        chunk = max(1, min(len(real), QUERY_BUDGET // ((8 if dense else 4) * max(1, self.n))))
        if dense:
            for start in range(0, len(real), chunk):
                yield np.arange(start, min(start + chunk, len(real))), *self._dense_chunk(
                    real[start:start + chunk].astype(np.float64), m)
            return
        if self.projected is None:
            self._prepare_projection()
        projected = self._project(real)
        for group in _similar_groups(projected, chunk):  # similar rows share candidates: measured once
            yield group, *self._query_chunk(real[group], projected[group], m)

    def _query_chunk(self, rows: np.ndarray, projected: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        rows64 = rows.astype(np.float64)
        c = len(rows)
        want = m + m // 8 + 8
        q = torch.from_numpy(projected)
        q_sq = (q.double() ** 2).sum(1).float()
        # Lower bounds of the squared distances (projected), c x n, less each row's |q|^2 (a constant per
        # row, added to the thresholds instead: one pass less over the scores).
        bound = torch.addmm(self.projected_sq[None, :], q, self.projected.T, beta=1, alpha=-2)
        slack = self._unit * (q_sq.sqrt() + self._norm_max) ** 2 + 1e-12  # rounding of the bound (see __init__)
        # 1. A first set of candidates: the rows' lowest bounds, under a threshold read off an evenly spaced
        #    sample of the columns (a top-k over every column would cost more than the scores themselves).
        stride = max(1, self.n // 4096)
        sample = bound[:, ::stride].contiguous()
        threshold = _kth_smallest(sample, min(-(-want // stride) + 1, sample.shape[1]))
        which, cols = _at_most(bound, threshold)
        short = np.flatnonzero(np.bincount(which, minlength=c) < m)
        if len(short):  # too few under the sampled threshold: these rows take their m lowest bounds (and ties)
            rows_short = torch.from_numpy(short)
            part = bound.index_select(0, rows_short)
            threshold[rows_short] = _kth_smallest(part, m)
            more_which, more_cols = _at_most(part, threshold[rows_short])
            keep = ~np.isin(which, short)
            which = np.concatenate([which[keep], short[more_which]])
            cols = np.concatenate([cols[keep], more_cols])
            order = np.argsort(which, kind="stable")
            which, cols = which[order], cols[order]
        # 2. Their exact distances bound each row's m-th nearest from above ...
        exact = self._exact_union(rows64, which, cols)
        order = np.lexsort((exact, which))
        starts = np.searchsorted(which[order], np.arange(c))
        tau = exact[order[starts + m - 1]]
        # 3. ... so the m nearest lie among the columns whose lower bound is below it: measure those not
        #    measured yet, and rank them all.
        limit = torch.from_numpy(tau).float() + slack - q_sq
        more_which, more_cols = _at_most(bound, limit)
        new = (bound.view(-1)[torch.from_numpy(more_which * self.n + more_cols)]
               > threshold[torch.from_numpy(more_which)]).numpy()
        more_which, more_cols = more_which[new], more_cols[new]
        if (len(more_cols) + len(cols)) * 16 > c * self.n:  # the projection hardly prunes these: measure all
            return self._dense_chunk(rows64, m)
        more = self._exact_union(rows64, more_which, more_cols)
        return self._select(np.concatenate([which, more_which]), np.concatenate([cols, more_cols]),
                            np.concatenate([exact, more]), c, m)

    def _exact_union(self, rows64: np.ndarray, which: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Squared distances (float64) of the pairs ``(rows64[which], cols)``: the union of the columns is
        gathered once and multiplied with all the rows (similar rows share most of their columns)."""
        if not len(cols):
            return np.zeros(0, np.float64)
        union, position = np.unique(cols, return_inverse=True)
        if len(union) * len(rows64) > 8 * len(cols):  # little sharing: one row at a time
            return self.exact_sq(rows64, which, cols)
        dots = torch.from_numpy(rows64) @ self._gather64(union).T  # c x |union|
        sq = np.einsum("ij,ij->i", rows64, rows64)[which] + self._sq64[cols] - 2.0 * dots.numpy()[which, position]
        return np.maximum(sq, 0.0)

    @staticmethod
    def _select(which: np.ndarray, cols: np.ndarray, sq: np.ndarray, c: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The m nearest per row from pairs (row ``which``, column ``cols``, squared distance ``sq``),
        each row having at least m pairs: by distance, then synthetic index."""
        order = np.lexsort((cols, sq, which))
        which, cols, sq = which[order], cols[order], sq[order]
        starts = np.searchsorted(which, np.arange(c))
        take = (starts[:, None] + np.arange(m)[None, :]).ravel()
        return np.sqrt(sq[take]).astype(np.float32).reshape(c, m), cols[take].astype(np.int64).reshape(c, m)

    def _dense_chunk(self, rows64: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Every column measured (float64 |q|^2 + |s|^2 - 2 q.s): for deep queries, and for vectors the
        projection cannot prune. Keeps the m lowest per row, of equal ones the lowest indices."""
        s64 = self._float64()
        q = torch.from_numpy(rows64)
        sq = torch.addmm(torch.from_numpy(self._sq64)[None, :], q, s64.T, beta=1, alpha=-2)
        sq += (q * q).sum(1)[:, None]
        sq.clamp_(min=0.0)
        c = len(rows64)
        if m < self.n:
            kth = sq.kthvalue(m, dim=1).values[:, None]
            below = sq < kth
            need = m - torch.count_nonzero(below, dim=1)  # how many of those equal to the m-th value to keep
            tied = sq == kth
            keep = below | (tied & (tied.cumsum(1) <= need[:, None]))
            cols = keep.nonzero(as_tuple=True)[1].reshape(c, m)  # row-major: each row's indices ascending
        else:
            cols = torch.arange(self.n).expand(c, self.n)
        values = sq.gather(1, cols)
        order = values.argsort(dim=1, stable=True)  # by distance; equal ones keep index order
        return (values.gather(1, order).sqrt().float().numpy(), cols.gather(1, order).numpy().astype(np.int64))

    def _query_sklearn(self, real: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        distances, indices = self._sk.kneighbors(real, n_neighbors=m)
        order = np.lexsort((indices, distances), axis=1)  # equal distances by synthetic index, as above
        return (np.take_along_axis(distances, order, 1).astype(np.float32),
                np.take_along_axis(indices, order, 1).astype(np.int64))


def _greedy_fill(edge_rows: np.ndarray, edge_d: np.ndarray, edge_j: np.ndarray, chosen: np.ndarray,
                 chosen_d: np.ndarray, count: np.ndarray, uses: np.ndarray, max_uses: int,
                 block: int = 1 << 15) -> None:
    """Visit the edges ``(edge_rows[e], edge_j[e])``, given in row-major rank order, in increasing
    distance (ties: that order, i.e. row, then rank) and take each whose real row has fewer than K
    neighbours and whose synthetic image is below the quota and not yet listed by that row; updates
    ``chosen``/``chosen_d``/``count``/``uses`` in place.

    Edge by edge in effect, in blocks in fact: within a block, an edge whose row and image cannot
    reach their limits even if every edge of the block on them were taken is taken at once; the
    others (contested) are decided one by one in order, which is all their outcome depends on.
    """
    k = chosen.shape[1]
    order = np.argsort(edge_d, kind="stable")
    open_rows = np.unique(edge_rows)
    for start in range(0, len(order), block):
        if (count[open_rows] >= k).all():
            break
        e = order[start:start + block]
        r, j, d = edge_rows[e], edge_j[e], edge_d[e]
        keep = (count[r] < k) & (uses[j] < max_uses)
        if not keep.any():
            continue
        r, j, d = r[keep], j[keep], d[keep]
        keep = ~(chosen[r] == j[:, None]).any(1)  # an image a row already lists (deeper rounds)
        r, j, d = r[keep], j[keep], d[keep]
        rows_u, row_n = np.unique(r, return_inverse=True)
        cols_u, col_n = np.unique(j, return_inverse=True)
        row_safe = (count[rows_u] + np.bincount(row_n, minlength=len(rows_u)) <= k)[row_n]
        col_safe = (uses[cols_u] + np.bincount(col_n, minlength=len(cols_u)) <= max_uses)[col_n]
        safe = row_safe & col_safe
        if safe.any():
            rs, js, ds = r[safe], j[safe], d[safe]
            slot = count[rs] + _rank_within(rs)  # safe edges of one row take the next slots, in block order
            chosen[rs, slot], chosen_d[rs, slot] = js, ds
            np.add.at(count, rs, 1)
            np.add.at(uses, js, 1)
        for i, jj, dd in zip(r[~safe].tolist(), j[~safe].tolist(), d[~safe].tolist()):
            n = count[i]
            if n >= k or uses[jj] >= max_uses or (chosen[i, :n] == jj).any():
                continue
            chosen[i, n], chosen_d[i, n] = jj, dd
            count[i] = n + 1
            uses[jj] += 1


def _kth_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k-th smallest value (a top-k: several times faster than ``kthvalue`` here)."""
    return scores.topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1)


def _at_most(scores: torch.Tensor, limit: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the entries of the contiguous c x n ``scores`` at most their row's ``limit``, in
    row-major order (numpy's flat search: several times faster than a 2-D ``nonzero``)."""
    flat = np.flatnonzero((scores <= limit[:, None]).numpy())
    return flat // scores.shape[1], flat % scores.shape[1]


def _similar_groups(points: np.ndarray, size: int) -> list[np.ndarray]:
    """Row indices in groups of at most ``size`` similar rows: split at the median along the direction
    of largest spread (a power iteration), recursively. Deterministic; any grouping gives the same result."""
    groups, stack = [], [np.arange(len(points))]
    while stack:
        idx = stack.pop()
        if len(idx) <= size:
            groups.append(idx)
            continue
        x = points[idx].astype(np.float64)
        x -= x.mean(axis=0)
        direction = np.ones(x.shape[1]) / np.sqrt(x.shape[1])
        for _ in range(8):
            direction = x.T @ (x @ direction)
            norm = np.linalg.norm(direction)
            if norm == 0:
                break
            direction /= norm
        order = idx[np.argsort(x @ direction, kind="stable")]
        half = len(order) // 2
        stack += [order[half:], order[:half]]
    return groups


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements have the same key (0, 1, 2, ... per key, in order)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    runs = np.diff(np.r_[first, len(keys)])
    ranks = np.arange(len(keys)) - np.repeat(first, runs)
    out = np.empty(len(keys), np.int64)
    out[order] = ranks
    return out


def pair_features(
    real: np.ndarray,
    synthetic: np.ndarray,
    k: int = DEFAULT_K,
    *,
    max_uses: int | None = None,
    overuse: float = DEFAULT_OVERUSE,
    search_depth: int | None = None,
    metric: str = "euclidean",
) -> PairResult:
    """Pair each real SP-Feat row with ``k`` synthetic rows by the rule in the module docstring.

    Args:
        max_uses: the quota (default :func:`default_max_uses`).
        search_depth: how far down its neighbour list a real image may look for
            a replacement (default: all synthetic images). Past it, the quota gives way.
    """
    real = np.asarray(real, np.float32)
    synthetic = np.asarray(synthetic, np.float32)
    n_real, n_syn = len(real), len(synthetic)
    k = int(k)
    if k < 1:
        raise S2RError(f"-k must be at least 1, got {k}")
    if n_real == 0 or n_syn == 0:
        raise S2RError("both SP-Feat files need at least one image")
    if n_syn < k:
        raise S2RError(f"only {n_syn} synthetic images for K = {k} neighbours", hint=f"pass -k {n_syn} or less")
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise S2RError(f"SP-Feat shapes do not match: real {real.shape}, synthetic {synthetic.shape}")
    if max_uses is None:
        max_uses = default_max_uses(n_real, n_syn, k, overuse)
    max_uses = int(max_uses)
    if max_uses < 1:
        raise S2RError(f"--max-uses must be at least 1, got {max_uses}")
    depth = n_syn if search_depth is None else min(n_syn, max(k, int(search_depth)))
    nn = NearestSynthetic(synthetic, metric)

    # chosen[i, :count[i]]: row i's neighbours in the order they were taken; -1 marks a free slot.
    chosen = np.full((n_real, k), -1, np.int64)
    chosen_d = np.zeros((n_real, k), np.float32)
    count = np.zeros(n_real, np.int64)
    uses = np.zeros(n_syn, np.int64)
    m = min(depth, k * DEFAULT_CANDIDATE_FACTOR)
    dist, idx = nn.query(real, m)
    plain, plain_dist = idx[:, :k].copy(), dist[:, :k].copy()  # the plain K nearest, before any replacement
    edges = (np.repeat(np.arange(n_real), m), dist.ravel(), idx.ravel())
    del dist, idx
    while True:
        # Greedy over this round's candidates of the rows still short, nearest first.
        _greedy_fill(*edges, chosen, chosen_d, count, uses, max_uses)
        short = np.flatnonzero(count < k)
        if len(short) == 0 or m >= depth:
            break
        # Every candidate of these rows is at quota: look further down their lists. Edges to images
        # already at quota would be refused, so they are left out as they are found; a deeper round
        # also lists the earlier ranks again, and those edges are refused for the same reason (or
        # because the row lists the image), so the outcome is that of visiting the new ranks alone.
        m = min(depth, SEARCH_GROWTH * m)
        r, d, j = nn.query_edges(real[short], m, usable=uses < max_uses)
        edges = (short[r], d, j)

    over_quota = 0
    if len(short):
        # Past the search depth the quota gives way: nearest candidates not yet listed.
        dist, idx = nn.query(real[short], depth)
        for r, i in enumerate(short.tolist()):
            listed = set(chosen[i, :count[i]].tolist())
            for c in range(depth):
                if count[i] >= k:
                    break
                j = int(idx[r, c])
                if j not in listed:
                    chosen[i, count[i]], chosen_d[i, count[i]] = j, dist[r, c]
                    listed.add(j)
                    count[i] += 1
                    uses[j] += 1
                    over_quota += 1

    # Each row's neighbours by distance; equal distances by synthetic index (the ranking's order).
    order = np.lexsort((chosen, chosen_d), axis=1)
    neighbors = np.take_along_axis(chosen, order, 1)
    distances = np.take_along_axis(chosen_d, order, 1)
    replaced = int((~(neighbors[:, :, None] == plain[:, None, :]).any(2)).sum())

    weights = np.zeros(n_syn, np.float64)
    used = uses > 0
    weights[used] = 1.0 / uses[used]
    row_w = weights[neighbors]
    probs = row_w / row_w.sum(axis=1, keepdims=True)
    return PairResult(neighbors=neighbors, distances=distances, probs=probs, synthetic_weights=weights,
                      use_counts=uses, k=k, max_uses=max_uses, candidates=int(m), metric=metric, replaced=replaced,
                      over_quota=over_quota, plain_use_counts=np.bincount(plain.ravel(), minlength=n_syn),
                      plain_distances=plain_dist)


def summarize(result: PairResult, synthetic_names, top: int = 10) -> dict[str, Any]:
    """Coverage, distance distribution and the most-used synthetic images, as plain types."""
    d = result.distances.astype(np.float64)
    # Most used first; among equals, those plain KNN would have used most (the hubs the quota capped).
    order = np.lexsort((np.arange(len(result.use_counts)), -result.plain_use_counts, -result.use_counts))[:top]
    return {
        "real": int(result.neighbors.shape[0]),
        "synthetic": int(len(result.use_counts)),
        "k": result.k,
        "metric": result.metric,
        "max_uses": result.max_uses,
        "candidates": result.candidates,
        "coverage": round(result.coverage, 6),
        "coverage_plain_knn": round(result.plain_coverage, 6),
        "replaced_slots": result.replaced,
        "over_quota_slots": result.over_quota,
        "distance": {
            "min": float(d.min()), "p25": float(np.percentile(d, 25)), "median": float(np.median(d)),
            "p75": float(np.percentile(d, 75)), "max": float(d.max()), "mean": float(d.mean()),
            "nearest_mean": float(d[:, 0].mean()), "kth_mean": float(d[:, -1].mean()),
            "plain_knn_mean": float(result.plain_distances.astype(np.float64).mean()),
        },
        "most_used": [
            {"name": str(synthetic_names[j]), "uses": int(result.use_counts[j]),
             "plain_knn_uses": int(result.plain_use_counts[j]), "weight": float(result.synthetic_weights[j])}
            for j in order.tolist() if result.use_counts[j] > 0
        ],
    }


# --- the pairs file -------------------------------------------------------------------------


@dataclass
class PairsFile:
    real_names: np.ndarray
    synthetic_names: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray
    probs: np.ndarray
    synthetic_weights: np.ndarray
    k: int
    levels: tuple[int, ...]
    space: str
    path: Path | None = None
    # Provenance: the specs the SP-Feat files were computed from, and the fingerprints of their image
    # files (io.dataset_fingerprint: names and byte sizes; "" when the file predates them or the data
    # could not be fingerprinted); names left out of the SP-Feat files as unreadable.
    real_spec: str = ""
    synthetic_spec: str = ""
    real_fingerprint: str = ""
    synthetic_fingerprint: str = ""
    real_skipped: tuple[str, ...] = ()
    synthetic_skipped: tuple[str, ...] = ()

    @property
    def has_fingerprints(self) -> bool:
        return bool(self.real_fingerprint and self.synthetic_fingerprint)


PAIRS_KEYS = ("real_names", "synthetic_names", "neighbors", "distances", "probs", "synthetic_weights", "k", "levels",
              "space")


def save_pairs(path: str | Path, result: PairResult, real, synthetic, *, overwrite: bool = False) -> Path:
    """Write ``pairs.npz`` from a :class:`PairResult` and the two SP-Feat files it came from.

    Besides the pairs, it records where they came from: each side's spec, the fingerprint of its
    image files and the names its SP-Feat file left out, so training can check the pairs against
    the datasets it is given (:func:`s2rcli.data.sampler.make_pair_sampler`).
    """
    arrays = {
        "format": np.asarray("s2r-pairs"), "format_version": np.asarray(1),
        "real_names": np.asarray(real.names, str), "synthetic_names": np.asarray(synthetic.names, str),
        "neighbors": result.neighbors, "distances": result.distances, "probs": result.probs,
        "synthetic_weights": result.synthetic_weights, "use_counts": result.use_counts,
        "k": np.asarray(result.k), "levels": np.asarray(real.levels, np.int64), "space": np.asarray(real.space),
        "metric": np.asarray(result.metric), "max_uses": np.asarray(result.max_uses),
        "candidates": np.asarray(result.candidates), "coverage": np.asarray(result.coverage),
        "real_spec": np.asarray(real.spec), "synthetic_spec": np.asarray(synthetic.spec),
        "real_fingerprint": np.asarray(getattr(real, "fingerprint", "") or ""),
        "synthetic_fingerprint": np.asarray(getattr(synthetic, "fingerprint", "") or ""),
        "real_skipped": np.asarray(_skipped(real), str), "synthetic_skipped": np.asarray(_skipped(synthetic), str),
    }
    return atomic_write_with(path, lambda fh: np.savez(fh, **arrays), overwrite=overwrite)


def _skipped(features) -> list[str]:
    skipped = getattr(features, "skipped", None)
    return [] if skipped is None else [str(name) for name in np.asarray(skipped).ravel()]


def load_pairs(path: str | Path) -> PairsFile:
    """Read and validate a pairs ``.npz`` written by ``s2r prepare pairs``."""
    path = Path(path)
    data = io.read_npz(path, PAIRS_KEYS, "pairs file",
                       "compute it with `s2r prepare pairs --real real.npz --synthetic syn.npz --out pairs.npz`")
    pairs = PairsFile(
        real_names=np.asarray(data["real_names"]).astype(str),
        synthetic_names=np.asarray(data["synthetic_names"]).astype(str),
        neighbors=np.asarray(data["neighbors"], np.int64), distances=np.asarray(data["distances"]),
        probs=np.asarray(data["probs"], np.float64), synthetic_weights=np.asarray(data["synthetic_weights"]),
        k=int(data["k"]), levels=tuple(int(v) for v in np.asarray(data["levels"]).ravel()),
        space=str(data["space"]), path=path,
        **{key: str(data[key]) for key in ("real_spec", "synthetic_spec", "real_fingerprint", "synthetic_fingerprint")
           if key in data},
        **{key: tuple(np.asarray(data[key]).astype(str).ravel().tolist())
           for key in ("real_skipped", "synthetic_skipped") if key in data},
    )
    n_real, n_syn = len(pairs.real_names), len(pairs.synthetic_names)
    if pairs.neighbors.shape != (n_real, pairs.k) or pairs.probs.shape != (n_real, pairs.k):
        raise S2RError(f"{path}: neighbour table {pairs.neighbors.shape} does not match {n_real} real images x K={pairs.k}")
    if n_real and (pairs.neighbors.min() < 0 or pairs.neighbors.max() >= n_syn):
        raise S2RError(f"{path}: neighbour indices fall outside the {n_syn} synthetic images")
    if n_real and not np.allclose(pairs.probs.sum(axis=1), 1.0, atol=1e-6):
        raise S2RError(f"{path}: sampling probabilities do not sum to 1 per real image")
    return pairs


def _same_file(a, b) -> bool:
    try:
        return a is not None and b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def same_data(real, synthetic) -> str | None:
    """Why two SP-Feat files describe the very same images (None if they do not): the same file,
    the same image files (fingerprint), or, for files without fingerprints, the same spec and names."""
    if _same_file(getattr(real, "path", None), getattr(synthetic, "path", None)):
        return f"--real and --synthetic are the same file {real.path}"
    fp_real, fp_syn = getattr(real, "fingerprint", ""), getattr(synthetic, "fingerprint", "")
    if fp_real and fp_real == fp_syn:
        return f"--real {real.path} and --synthetic {synthetic.path} were computed from the same image files"
    if (not (fp_real and fp_syn) and str(real.spec) == str(synthetic.spec)
            and np.array_equal(np.asarray(real.names), np.asarray(synthetic.names))):
        return f"--real {real.path} and --synthetic {synthetic.path} were both computed from {real.spec}"
    return None


def check_compatible(real, synthetic) -> None:
    """Refuse two SP-Feat files that cannot be compared (levels, label space, classes), or that
    describe the same images: pairing a dataset with itself teaches a translator nothing."""
    why = same_data(real, synthetic)
    if why:
        raise S2RError(f"{why}: pairing images with themselves is not a synthetic-to-real pairing",
                       hint="pass the SP-Feat file of the real images as --real and that of the synthetic images "
                            "as --synthetic")
    if real.levels != synthetic.levels:
        raise S2RError(f"SP-Feat levels differ: real {list(real.levels)} ({real.path}), "
                       f"synthetic {list(synthetic.levels)} ({synthetic.path})",
                       hint="compute both with the same --levels")
    if real.space != synthetic.space or real.num_classes != synthetic.num_classes:
        raise S2RError(f"label spaces differ: real {real.space!r} ({real.num_classes} classes), "
                       f"synthetic {synthetic.space!r} ({synthetic.num_classes} classes)",
                       hint="compute both with the same --space")


def class_shares(class_pixels: np.ndarray) -> np.ndarray:
    """Each class's share of all labelled pixels of a domain (exact, from integer counts)."""
    totals = np.asarray(class_pixels, np.int64).sum(axis=0).astype(np.float64)
    s = totals.sum()
    return totals / s if s > 0 else totals


# --- pictures -------------------------------------------------------------------------------


def _thumbnail(image: np.ndarray, width: int, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((width, height), Image.NEAREST if nearest else Image.BILINEAR))


def _overlay(dataset, index: int, space, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The thumbnail of an image and of the image blended with its colourised labels (None without labels)."""
    from .labels import colorize

    image = _thumbnail(dataset.read_image(index), width)
    if not getattr(dataset, "has_labels", False):
        return image, None
    colors = _thumbnail(colorize(dataset.read_label(index), space), width, nearest=True)
    if colors.shape != image.shape:
        colors = _thumbnail(colors, image.shape[1], nearest=True)[: image.shape[0]]
    return image, (0.4 * image + 0.6 * colors).astype(np.uint8)


def render_preview(path: str | Path, pairs: PairsFile, real_data, synthetic_data, *, queries: int = 4,
                   neighbors: int = 3, width: int = 320) -> Path:
    """Paper Fig. 5: a few real queries, each beside its nearest synthetic neighbours.

    Each query takes two rows: the photos, then the same photos with their
    labels overlaid (real images without labels show the photo only).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..utils.atomic import atomic_write_with

    real_pos = {name: i for i, name in enumerate(real_data.names)}
    syn_pos = {name: i for i, name in enumerate(synthetic_data.names)}
    n_real = len(pairs.real_names)
    chosen = np.unique(np.linspace(0, n_real - 1, min(queries, n_real)).round().astype(int))
    cols = 1 + min(neighbors, pairs.k)
    first = real_data.read_image(real_pos[pairs.real_names[chosen[0]]])
    cell_w = 2.6  # inches per column
    cell_h = cell_w * first.shape[0] / first.shape[1]
    gap = 0.45  # inches above each query's photo row, for the titles
    height = len(chosen) * (2 * cell_h + gap) + 0.4
    fig = Figure(figsize=(cell_w * cols, height), dpi=100)
    FigureCanvasAgg(fig)
    # Each query: a gap for the titles, the photo row, then its overlay row right beneath.
    ratios = [gap, cell_h, cell_h] * len(chosen)
    grid = fig.add_gridspec(3 * len(chosen), cols, height_ratios=ratios, hspace=0.04, wspace=0.04,
                            left=0.005, right=0.995, top=1 - 0.3 / height, bottom=0.005)
    for row, q in enumerate(chosen.tolist()):
        items = [("real", real_data, real_pos[pairs.real_names[q]], str(pairs.real_names[q]))]
        for c in range(cols - 1):
            j = int(pairs.neighbors[q, c])
            items.append((f"#{c + 1}  d={float(pairs.distances[q, c]):.3f}  p={float(pairs.probs[q, c]):.3f}",
                          synthetic_data, syn_pos[pairs.synthetic_names[j]], str(pairs.synthetic_names[j])))
        for col, (title, data, index, name) in enumerate(items):
            image, blended = _overlay(data, index, data.space, width)
            top = fig.add_subplot(grid[3 * row + 1, col])
            top.imshow(image)
            top.set_title(f"{title}\n{name}", fontsize=7)
            bottom = fig.add_subplot(grid[3 * row + 2, col])
            if blended is not None:
                bottom.imshow(blended)
            else:
                bottom.text(0.5, 0.5, "no labels", ha="center", va="center", fontsize=8)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("SP-Feat pairs: each real query (left) with its nearest synthetic images; "
                 "second row: labels overlaid", fontsize=10, y=0.995)
    return atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", bbox_inches="tight"))


def render_class_frequencies(path: str | Path, real_pixels: np.ndarray, synthetic_pixels: np.ndarray,
                             class_names) -> Path:
    """Paper Fig. 6: each class's share of labelled pixels, synthetic beside real (log scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..utils.atomic import atomic_write_with

    real_share, syn_share = class_shares(real_pixels), class_shares(synthetic_pixels)
    x = np.arange(len(class_names))
    fig = Figure(figsize=(max(6.0, 0.55 * len(class_names)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x - 0.2, 100 * syn_share, width=0.4, label="synthetic", color="#d95f02")
    ax.bar(x + 0.2, 100 * real_share, width=0.4, label="real", color="#1b9e77")
    ax.set_yscale("log", nonpositive="clip")
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("share of labelled pixels (%)")
    ax.set_title("Class pixel shares by domain")
    ax.legend()
    fig.tight_layout()
    return atomic_write_with(path, lambda fh: fig.savefig(fh, format="png"))
