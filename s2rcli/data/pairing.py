"""KNN pairing of real and synthetic images by SP-Feat, with use-balancing weights (paper 001 §3.2.2).

Real images are the queries; synthetic images are the candidates.

The rule, precisely:

1. **Candidates.** scikit-learn's ``NearestNeighbors`` (brute force,
   Euclidean distance on the concatenated SP-Feat vectors; the levels are not
   re-weighted) ranks the synthetic images by distance to each real image.
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
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def _fit_neighbors(synthetic: np.ndarray, metric: str):
    from sklearn.neighbors import NearestNeighbors

    if metric not in METRICS:
        raise S2RError(f"unknown metric {metric!r}", hint="choose one of " + ", ".join(METRICS))
    return NearestNeighbors(algorithm="brute", metric=metric).fit(np.asarray(synthetic, np.float32))


def _query(nn, real: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    distances, indices = nn.kneighbors(np.asarray(real, np.float32), n_neighbors=m)
    return distances.astype(np.float32), indices.astype(np.int64)


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
    nn = _fit_neighbors(synthetic, metric)

    chosen: list[list[tuple[float, int]]] = [[] for _ in range(n_real)]
    chosen_ids: list[set[int]] = [set() for _ in range(n_real)]
    uses = [0] * n_syn  # plain lists: this loop is pure Python, numpy scalars would slow it down
    rows = np.arange(n_real)
    lo, m = 0, min(depth, k * DEFAULT_CANDIDATE_FACTOR)
    dist, idx = _query(nn, real, m)
    plain, plain_dist = idx[:, :k].copy(), dist[:, :k].copy()  # the plain K nearest, before any replacement
    while True:
        # Greedy over this round's candidate ranks [lo, m) of the rows still short,
        # nearest first; the stable sort breaks ties by (row, rank).
        d, j_all = dist[:, lo:], idx[:, lo:]
        width = d.shape[1]
        row_ids, d_flat, j_flat = rows.tolist(), d.ravel().tolist(), j_all.ravel().tolist()
        open_rows = sum(1 for i in row_ids if len(chosen[i]) < k)
        for e in np.argsort(d.ravel(), kind="stable").tolist():
            i = row_ids[e // width]
            row = chosen[i]
            if len(row) >= k:
                continue
            j = j_flat[e]
            if uses[j] >= max_uses or j in chosen_ids[i]:
                continue
            row.append((d_flat[e], j))
            chosen_ids[i].add(j)
            uses[j] += 1
            if len(row) == k:
                open_rows -= 1
                if open_rows == 0:
                    break
        short = np.asarray([i for i in row_ids if len(chosen[i]) < k], np.int64)
        if len(short) == 0 or m >= depth:
            break
        # Every candidate of these rows is at quota: look further down their lists.
        rows, lo, m = short, m, min(depth, SEARCH_GROWTH * m)
        dist, idx = _query(nn, real[short], m)

    over_quota = 0
    if len(short):
        # Past the search depth the quota gives way: nearest candidates not yet listed.
        dist, idx = _query(nn, real[short], depth)
        for r, i in enumerate(short.tolist()):
            for c in range(depth):
                if len(chosen[i]) >= k:
                    break
                j = int(idx[r, c])
                if j not in chosen_ids[i]:
                    chosen[i].append((float(dist[r, c]), j))
                    chosen_ids[i].add(j)
                    uses[j] += 1
                    over_quota += 1

    neighbors = np.empty((n_real, k), np.int64)
    distances = np.empty((n_real, k), np.float32)
    for i, row in enumerate(chosen):
        row.sort(key=lambda t: t[0])  # stable: ties keep the order they were taken in
        neighbors[i] = [j for _, j in row]
        distances[i] = [d for d, _ in row]
    replaced = int(sum(len(chosen_ids[i] - set(plain[i].tolist())) for i in range(n_real)))
    uses = np.asarray(uses, np.int64)

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
