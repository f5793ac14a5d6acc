"""Spatial Pyramid Features (SP-Feat, the UNIT + smart batch paper §3.2.2): per-slice class histograms of a label map.

For every pyramid level ``l`` the label map is cut into ``l x l`` non-overlapping
slices. Slice boundaries are integer and exact: along an axis of ``n`` pixels,
slice ``i`` of level ``l`` covers ``[floor(i*n/l), floor((i+1)*n/l))``. So with
``n = 5`` and ``l = 2`` the slices hold 2 and 3 pixels (the remainder goes to
the later slices), and for levels that divide each other (1, 2, 4) every coarse
slice is exactly the union of its finer slices.

Each slice's histogram counts the pixels of every class and is divided by the
slice's *labelled* pixel count (``ignore_index`` pixels do not count); a slice
with no labelled pixel gives all zeros. The vector concatenates, level by level
in the order given, slice by slice in row-major order, ``num_classes`` bins per
slice::

    vector[offset(l) + (row * l + col) * num_classes + class],  offset(l) = C * sum(m*m for m before l)

Its length is ``num_classes * sum(l*l for l in levels)``: 19 * 21 = 399 for
Cityscapes' 19 classes at the default levels (1, 2, 4).

Speed: the pixels are counted once, whatever the number of levels, in the cells
of the grid formed by the union of all levels' boundaries (16 cells for 1, 2,
4); each level's slices are sums of whole cells (2-D prefix sums). The counting
is OpenCV's uint8 histogram on each cell's view, or equivalently one
``np.bincount`` over ``cell * 256 + value`` (see :func:`cell_counts`).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import io
from .datasets import open_dataset, parse_spec
from ..console import info, make_progress, warn
from ..errors import S2RError
from ..utils.atomic import atomic_write_with, refuse_overwrite

DEFAULT_LEVELS: tuple[int, ...] = (1, 2, 4)
FORMAT = "s2r-spfeat"
FORMAT_VERSION = 1


def feature_dim(num_classes: int, levels: Sequence[int] = DEFAULT_LEVELS) -> int:
    """Length of an SP-Feat vector: ``num_classes * sum(l*l)``."""
    return int(num_classes) * sum(int(l) * int(l) for l in levels)


def check_levels(levels: Iterable[int]) -> tuple[int, ...]:
    """Validate pyramid levels: positive, distinct integers (order is kept)."""
    out = tuple(int(l) for l in levels)
    if not out:
        raise S2RError("at least one pyramid level is needed", hint="e.g. --levels 1,2,4")
    if any(l < 1 for l in out):
        raise S2RError(f"pyramid levels must be positive integers, got {list(out)}", hint="e.g. --levels 1,2,4")
    if len(set(out)) != len(out):
        raise S2RError(f"pyramid levels must be distinct, got {list(out)}", hint="e.g. --levels 1,2,4")
    return out


def parse_levels(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``, with a clear error for anything else."""
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise S2RError(f"cannot read pyramid levels {text!r}", hint="give comma-separated integers, e.g. 1,2,4") from None
    return check_levels(values)


def slice_bounds(size: int, level: int) -> np.ndarray:
    """The ``level + 1`` integer boundaries ``floor(i * size / level)`` along one axis."""
    return (np.arange(level + 1, dtype=np.int64) * int(size)) // int(level)


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int, levels: tuple[int, ...]):
    """The union grid of all levels' boundaries, and where each level's boundaries sit in it.

    Returns ``(ys, xs, groups)``: strictly increasing cell boundaries along each
    axis (so every cell holds at least one pixel), and per level the indices
    ``(gy, gx)`` of its ``l + 1`` boundaries in ``ys`` / ``xs``.
    """
    ys = np.unique(np.concatenate([slice_bounds(height, l) for l in levels]))
    xs = np.unique(np.concatenate([slice_bounds(width, l) for l in levels]))
    groups = [(np.searchsorted(ys, slice_bounds(height, l)), np.searchsorted(xs, slice_bounds(width, l)))
              for l in levels]
    return ys.tolist(), xs.tolist(), groups


@functools.lru_cache(maxsize=4)
def _cell_index(height: int, width: int, levels: tuple[int, ...]) -> np.ndarray:
    """``cell * 256`` for every pixel (int32), the base of the bincount index."""
    ys, xs, _ = _grid(height, width, levels)
    row_of = np.repeat(np.arange(len(ys) - 1), np.diff(ys))
    col_of = np.repeat(np.arange(len(xs) - 1), np.diff(xs))
    index = ((row_of[:, None] * (len(xs) - 1) + col_of[None, :]) * 256).astype(np.int32)
    index.setflags(write=False)
    return index


def _cell_counts_bincount(label: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Per-cell counts of all 256 label values with one ``np.bincount`` over ``cell * 256 + value``."""
    ys, xs, _ = _grid(label.shape[0], label.shape[1], levels)
    index = _cell_index(label.shape[0], label.shape[1], levels) + label
    n_cells = (len(ys) - 1) * (len(xs) - 1)
    return np.bincount(index.ravel(), minlength=n_cells * 256).reshape(len(ys) - 1, len(xs) - 1, 256)


def _cell_counts_opencv(label: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """The same counts from OpenCV's uint8 histogram on each cell's view (no copy, no index array)."""
    import cv2

    ys, xs, _ = _grid(label.shape[0], label.shape[1], levels)
    counts = np.empty((len(ys) - 1, len(xs) - 1, 256), np.int64)
    for r in range(len(ys) - 1):
        band = label[ys[r]:ys[r + 1]]
        for c in range(len(xs) - 1):
            counts[r, c] = cv2.calcHist([band[:, xs[c]:xs[c + 1]]], [0], None, [256], [0, 256]).ravel()
    return counts


# OpenCV's histogram counts in float32: exact up to 2**24 pixels per cell. Past
# that, or for very many cells (Python overhead per cell), the bincount is used.
_OPENCV_MAX_CELL_PIXELS = 2**24
_OPENCV_MAX_CELLS = 400
# Below about 128 x 256 pixels the per-cell calls cost more than the single bincount.
_OPENCV_MIN_PIXELS = 2**15


@functools.lru_cache(maxsize=8)
def _auto_method(height: int, width: int, levels: tuple[int, ...]) -> str:
    ys, xs, _ = _grid(height, width, levels)
    n_cells = (len(ys) - 1) * (len(xs) - 1)
    largest = int(np.diff(ys).max(initial=0)) * int(np.diff(xs).max(initial=0))
    use_opencv = (height * width >= _OPENCV_MIN_PIXELS and n_cells <= _OPENCV_MAX_CELLS
                  and largest < _OPENCV_MAX_CELL_PIXELS)
    return "opencv" if use_opencv else "bincount"


def cell_counts(label: np.ndarray, levels: Sequence[int] = DEFAULT_LEVELS, method: str = "auto") -> np.ndarray:
    """Counts of every label value (0..255) in each cell of the levels' union grid: rows x cols x 256 int64.

    ``method``: ``"opencv"`` (``cv2.calcHist`` on each cell's view),
    ``"bincount"`` (one ``np.bincount`` over ``cell * 256 + value``), or
    ``"auto"``: OpenCV, which is 3-5x faster on 1052 x 1914 maps, unless the map
    is small (under 2**15 pixels), a cell is too large for float32 counts, or
    there are very many cells. Both give the same integers.
    """
    levels = check_levels(levels)
    label = np.asarray(label)
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"cell_counts needs an H x W uint8 label map, got {label.dtype} {label.shape}")
    if method == "auto":
        method = _auto_method(label.shape[0], label.shape[1], levels)
    if method == "opencv":
        return _cell_counts_opencv(label, levels)
    if method == "bincount":
        return _cell_counts_bincount(label, levels)
    raise ValueError(f"unknown method {method!r}")


@functools.lru_cache(maxsize=16)
def _invalid_values(num_classes: int, ignore_index: int) -> np.ndarray:
    """1 for label values that are neither a class nor the ignore index, else 0 (length 256)."""
    flags = np.ones(256, np.int64)
    flags[:num_classes] = 0
    if 0 <= ignore_index < 256:
        flags[ignore_index] = 0
    flags.setflags(write=False)
    return flags


def spfeat_with_counts(
    label: np.ndarray, num_classes: int, levels: Sequence[int] = DEFAULT_LEVELS, ignore_index: int = 255,
    *, method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """SP-Feat vector (float32) and the whole image's per-class pixel counts (int64, length C).

    Raises :class:`S2RError` if the label holds a value that is neither a class
    (``< num_classes``) nor ``ignore_index``: such a map is not in the common
    label space.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"a label map is H x W, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise S2RError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
        label = label.astype(np.uint8)
    levels = check_levels(levels)
    C = int(num_classes)
    counts = cell_counts(label, levels, method)
    per_value = counts.sum(axis=(0, 1))
    invalid = per_value * _invalid_values(C, int(ignore_index))
    if invalid.any():
        bad = np.flatnonzero(invalid).tolist()
        raise S2RError(
            f"label map has {int(invalid.sum())} pixels with values {bad[:8]} outside the {C}-class space "
            f"(ignore = {ignore_index})",
            hint="labels must be in the common label space; remap them first (s2r prepare remap) or pick the matching --space",
        )
    if 0 <= ignore_index < C:
        counts = counts.copy()
        counts[..., ignore_index] = 0  # an ignore index inside the class range: that class never counts
    counts = counts[..., :C]
    # 2-D prefix sums over the cell grid: any slice (a block of whole cells) is four lookups.
    prefix = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1, C), np.int64)
    prefix[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)
    _, _, groups = _grid(label.shape[0], label.shape[1], levels)
    parts = []
    for gy, gx in groups:
        y0, y1, x0, x1 = gy[:-1, None], gy[1:, None], gx[None, :-1], gx[None, 1:]
        hist = (prefix[y1, x1] - prefix[y0, x1] - prefix[y1, x0] + prefix[y0, x0]).astype(np.float64)
        total = hist.sum(axis=2, keepdims=True)
        parts.append(np.divide(hist, total, out=np.zeros_like(hist), where=total > 0).reshape(-1))
    return np.concatenate(parts).astype(np.float32), counts.sum(axis=(0, 1)).astype(np.int64)


def spfeat(
    label: np.ndarray, num_classes: int, levels: Sequence[int] = DEFAULT_LEVELS, ignore_index: int = 255
) -> np.ndarray:
    """The SP-Feat vector of one H x W label map (see the module docstring for the layout).

    >>> spfeat(np.zeros((4, 4), np.uint8), num_classes=2, levels=(1,))
    array([1., 0.], dtype=float32)
    """
    return spfeat_with_counts(label, num_classes, levels, ignore_index)[0]


# --- a whole dataset ------------------------------------------------------------------------


@dataclass
class SpfeatFile:
    """An SP-Feat ``.npz`` in memory."""

    features: np.ndarray  # N x D float32
    names: np.ndarray  # N unicode
    levels: tuple[int, ...]
    space: str
    num_classes: int
    spec: str
    class_pixels: np.ndarray  # N x C int64: labelled pixels per class over the whole image
    source: str  # "labels" or "segmenter:<checkpoint>"
    path: Path | None = None
    fingerprint: str = ""  # names and byte sizes of the image files (io.dataset_fingerprint); "" if unknown
    skipped: np.ndarray | None = None  # names left out as unreadable (on_error=skip)


REQUIRED_KEYS = ("features", "names", "levels", "space", "num_classes", "spec")


def load_spfeat(path: str | Path) -> SpfeatFile:
    """Read and validate an SP-Feat ``.npz`` written by :func:`compute_spfeat_file`."""
    path = Path(path)
    data = io.read_npz(path, REQUIRED_KEYS, "SP-Feat file", "compute it with `s2r prepare spfeat SPEC --out FILE`",
                       article="an")
    names = np.asarray(data["names"]).astype(str)
    num_classes = int(data["num_classes"])
    class_pixels = (np.asarray(data["class_pixels"], dtype=np.int64) if "class_pixels" in data
                    else np.zeros((len(names), num_classes), np.int64))
    result = SpfeatFile(
        features=np.asarray(data["features"], dtype=np.float32), names=names,
        levels=tuple(int(l) for l in np.asarray(data["levels"]).ravel()), space=str(data["space"]),
        num_classes=num_classes, spec=str(data["spec"]), class_pixels=class_pixels,
        source=str(data["source"]) if "source" in data else "labels", path=path,
        fingerprint=str(data["fingerprint"]) if "fingerprint" in data else "",
        skipped=np.asarray(data["skipped"]).astype(str) if "skipped" in data else np.asarray([], str),
    )
    if result.features.ndim != 2 or result.features.shape[0] != len(result.names):
        raise S2RError(f"{path}: features {result.features.shape} do not match {len(result.names)} names")
    if result.features.shape[1] != feature_dim(result.num_classes, result.levels):
        raise S2RError(f"{path}: feature length {result.features.shape[1]} does not match "
                       f"{result.num_classes} classes at levels {list(result.levels)}")
    return result


def partial_path(out_path: str | Path) -> Path:
    """Where the resumable partial result of ``out_path`` lives: ``NAME.partial.npz``."""
    out_path = Path(out_path)
    stem = out_path.name[:-4] if out_path.name.endswith(".npz") else out_path.name
    return out_path.with_name(stem + ".partial.npz")


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    atomic_write_with(path, lambda fh: np.savez(fh, **arrays))


def _dataset_spec(dataset) -> str:
    if getattr(dataset, "spec", None):
        return str(dataset.spec)
    split = getattr(dataset, "split", None)
    spec = f"{getattr(dataset, 'kind', 'folder')}:{getattr(dataset, 'root', '')}"
    return spec + (f"?split={split}" if split else "")


# Worker state: set once per process by the pool initializer (or in-process for 1 worker).
_WORKER: dict[str, Any] = {}


def _init_worker(dataset, num_classes: int, levels: tuple[int, ...], ignore_index: int,
                 images: list | None = None, skip: bool = False) -> None:
    _WORKER.update(dataset=dataset, num_classes=num_classes, levels=levels, ignore_index=ignore_index,
                   images=images, skip=skip)


def _label_chunk(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """SP-Feat of a chunk of images; with ``skip``, unreadable ones come back in the last list
    (index, reason) with zero rows instead of stopping the run."""
    w = _WORKER
    feats = np.zeros((len(indices), feature_dim(w["num_classes"], w["levels"])), np.float32)
    counts = np.zeros((len(indices), w["num_classes"]), np.int64)
    skipped: list[tuple[int, str]] = []
    for row, i in enumerate(indices):
        try:
            image = w["images"][int(i)] if w["images"] is not None else None
            if image is not None:
                io.verify_image(image)  # labels come from the file beside it: a broken image must not pass
            label = w["dataset"].read_label(int(i))
        except S2RError as exc:
            if not w["skip"]:
                raise
            skipped.append((int(i), exc.message))
            continue
        try:
            feats[row], counts[row] = spfeat_with_counts(label, w["num_classes"], w["levels"], w["ignore_index"])
        except S2RError as exc:
            name = w["dataset"].names[int(i)]
            raise S2RError(f"{name}: {exc.message}", hint=exc.hint) from None
    return indices, feats, counts, skipped


def compute_spfeat_file(
    dataset,
    out_path: str | Path,
    levels: Sequence[int] = DEFAULT_LEVELS,
    workers: int = 1,
    labeller: Any = None,
    *,
    space: str = "cityscapes19",
    spec: str | None = None,
    overwrite: bool = False,
    chunk_size: int = 16,
    partial_every_s: float = 30.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute SP-Feat for every image of ``dataset`` and write ``out_path`` (``.npz``).

    Args:
        dataset: a :class:`~s2rcli.data.datasets.Dataset`, or a spec string opened in ``space``.
        out_path: the ``.npz`` to write: ``features`` (N x D float32), ``names``,
            ``levels``, ``space``, ``num_classes``, ``spec``, plus ``class_pixels``
            (N x C exact labelled-pixel counts), ``source``, ``fingerprint`` (the
            names and byte sizes of the image files, see :func:`io.dataset_fingerprint`;
            ``prepare pairs`` carries it into the pairs file so training can check
            it) and ``skipped`` (names left out, below).
        levels: pyramid levels.
        workers: processes reading labels in parallel (1 = in this process).
            Ignored with a segmenter, whose inference runs in this process.
        labeller: replaces the dataset's labels (for real images without
            annotation): an object with ``read_label(i)`` and a ``source`` string
            recorded in the file, such as :class:`s2rcli.evaluation.SegmenterLabels`.
        spec: recorded in the file (the previews of ``prepare pairs`` reopen it);
            defaults to the spec string, or ``KIND:ROOT?split=...``.
        overwrite: replace an existing ``out_path`` (and discard a partial result
            computed from other inputs).
        chunk_size: images per work unit.
        partial_every_s: how often the partial result ``NAME.partial.npz`` is
            rewritten (atomically). A run that stops early continues from it;
            it is removed once ``out_path`` is written. The partial records what
            it was computed from (spec, label space, labels or segmenter, and a
            fingerprint of the names, sizes and modification times of the files
            read); one computed from other inputs is refused, not resumed.
            One for other pyramid levels only is set aside (recomputed).

    Each image's file is checked to decode to its end, as well as its label: a
    truncated or empty file stops the run naming it, or, with the dataset's
    ``on_error=skip``, is left out of the output, reported, and listed in ``skipped``.
    Memory stays at the output matrix plus one chunk per worker, whatever N is.
    Labels that hold no class pixel at all (every kept one all ignore: the wrong label space or
    dataset kind, or empty maps) would give all-zero features: that is an :class:`S2RError`.
    Returns a summary dict (count, dimension, seconds, resumed and skipped images, path).
    """
    out_path = Path(out_path)
    refuse_overwrite(out_path, overwrite, "SP-Feat file")
    if isinstance(dataset, (str, os.PathLike)):
        spec = spec or str(dataset)
        dataset = open_dataset(str(dataset), space)
    spec = spec or _dataset_spec(dataset)
    label_space = dataset.space
    space_name, num_classes, ignore = label_space.name, int(label_space.num_classes), int(label_space.ignore_index)
    levels = check_levels(levels)
    names = np.asarray(list(dataset.names), dtype=str)
    n = len(names)
    if n == 0:
        raise S2RError(f"no images found in {spec}", hint="check the dataset path and split")
    if labeller is None and not getattr(dataset, "has_labels", True):
        raise S2RError(f"{spec} has no labels to compute SP-Feat from",
                       hint="pass --segmenter CKPT to use a segmenter's predictions instead")
    source = "labels" if labeller is None else str(labeller.source)
    dim = feature_dim(num_classes, levels)
    skip = getattr(dataset, "on_error", "fail") == "skip"
    samples = getattr(dataset, "samples", None)
    # The label readers decode only labels: each image is checked too (a segmenter decodes it anyway).
    images = ([getattr(s, "image", None) for s in samples] if labeller is None and samples is not None
              and len(samples) == n else None)

    features = np.zeros((n, dim), np.float32)
    class_pixels = np.zeros((n, num_classes), np.int64)
    done = np.zeros(n, bool)
    skipped = np.zeros(n, bool)
    inputs = io.dataset_fingerprint(dataset, labels=labeller is None, mtime=True)
    meta = {"names": names, "levels": np.asarray(levels, np.int64), "space": np.asarray(space_name),
            "num_classes": np.asarray(num_classes), "spec": np.asarray(spec), "source": np.asarray(source),
            "format": np.asarray(FORMAT), "format_version": np.asarray(FORMAT_VERSION)}

    part = partial_path(out_path)
    resumed = 0
    if part.exists():
        resumed = _load_partial(part, {**meta, "inputs": np.asarray(inputs)}, features, class_pixels, done,
                                overwrite=overwrite)

    def save_partial() -> None:
        _save_npz(part, {**meta, "inputs": np.asarray(inputs), "features": features, "class_pixels": class_pixels,
                         "done": done, "skipped": skipped})

    todo = np.flatnonzero(~done)
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    workers = max(1, int(workers))
    t0 = time.perf_counter()
    last_save = time.monotonic()
    dirty = False
    pool = None
    bar = make_progress()
    if not progress:
        bar.disable = True
    if progress:
        info(f"SP-Feat of {n} images from {spec} at levels {list(levels)}"
             + (f", labels from {labeller.source}" if labeller is not None else ""))
    try:
        if labeller is not None:
            _init_worker(labeller, num_classes, levels, ignore, None, skip)
            results = map(_label_chunk, chunks)
        elif workers == 1 or len(chunks) <= 1:
            _init_worker(dataset, num_classes, levels, ignore, images, skip)
            results = map(_label_chunk, chunks)
        else:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(
                min(workers, len(chunks)), initializer=_init_worker,
                initargs=(dataset, num_classes, levels, ignore, images, skip))
            results = pool.imap_unordered(_label_chunk, chunks)
        with bar:
            task = bar.add_task("SP-Feat", total=n, completed=int(done.sum()))
            last_refresh = 0.0
            for indices, feats, counts, bad in results:
                features[indices], class_pixels[indices], done[indices] = feats, counts, True
                for i, reason in bad:
                    skipped[i] = True
                    warn(f"left out {names[i]} ({int(skipped.sum())} so far, on_error=skip): {reason}")
                dirty = True
                bar.advance(task, len(indices))
                now = time.monotonic()
                if now - last_refresh > 0.2:
                    bar.refresh()
                    last_refresh = now
                if now - last_save > partial_every_s:
                    save_partial()
                    last_save, dirty = now, False
            bar.refresh()
    except BaseException:
        # Keep what was computed: the next run continues from the partial file.
        if dirty:
            save_partial()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        _WORKER.clear()

    n_skipped = int(skipped.sum())
    if n_skipped == n:
        raise S2RError(f"every one of the {n} images of {spec} was left out as unreadable (on_error=skip); "
                       f"no SP-Feat file was written",
                       hint="check the files named in the warnings above, or the dataset spec")
    keep = ~skipped
    if int(class_pixels[keep].sum()) == 0:
        # Every kept label is all ignore (or its classes are outside the space): the features would
        # all be zero and pairing on them would be meaningless. No file is written, and the partial
        # result is dropped, so a run with the labels or label space fixed starts afresh.
        if part.exists():
            part.unlink()
        what = "the segmenter's predictions hold" if labeller is not None else "the labels hold"
        raise S2RError(f"{what} no pixel of any of the {num_classes} classes of {space_name} in any of the "
                       f"{int(keep.sum())} images of {spec} (all ignore = {ignore}), so every SP-Feat vector would "
                       f"be zero; no SP-Feat file was written",
                       hint="check that the dataset kind and --space match the label files (raw ids of another "
                            "dataset map to ignore), or that the labels are not empty")
    fingerprint = io.dataset_fingerprint(dataset, names[keep].tolist())
    _save_npz(out_path, {**meta, "names": names[keep], "features": features[keep],
                         "class_pixels": class_pixels[keep], "fingerprint": np.asarray(fingerprint),
                         "skipped": names[skipped]})
    if part.exists():
        part.unlink()
    if n_skipped:
        warn(f"left out {n_skipped} of {n} images of {spec} that could not be read (on_error=skip); "
             f"{out_path} lists them under 'skipped'")
    return {"path": str(out_path), "images": n - n_skipped, "dim": dim, "levels": list(levels), "space": space_name,
            "source": source, "resumed": resumed, "skipped": n_skipped,
            "seconds": round(time.perf_counter() - t0, 3)}


# What a partial result must share with the run that resumes it: the data it was computed from.
_PARTIAL_IDENTITY = {"spec": "dataset spec", "names": "image names", "inputs": "files (names, sizes, times)",
                     "space": "label space", "num_classes": "number of classes", "source": "labels"}


def _same_spec(a: str, b: str) -> bool:
    """Whether two spec strings name the same data read the same way: the same kind, folder (however
    it is spelt) and options, except ``on_error`` (it decides what is reported, not what is read)."""
    if a == b:
        return True
    try:
        pa, pb = parse_spec(a), parse_spec(b)
    except S2RError:
        return False
    options = [{k: v for k, v in p.options.items() if k != "on_error"} for p in (pa, pb)]
    return pa.kind == pb.kind and pa.path.resolve() == pb.path.resolve() and options[0] == options[1]


def _load_partial(part: Path, meta: dict, features, class_pixels, done, *, overwrite: bool = False) -> int:
    """Fill the arrays from a partial file written for the same inputs; returns the rows restored.

    A partial computed from other inputs (see ``_PARTIAL_IDENTITY``), or one that does not
    record them (written by an older s2r), is an :class:`S2RError` unless ``overwrite``, which
    discards it; one for other pyramid levels only is set aside with a warning.
    """
    try:
        with np.load(part, allow_pickle=False) as data:
            recorded = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, KeyError) as exc:
        warn(f"ignoring unreadable partial result {part}: {exc}")
        return 0
    differs = [label for key, label in _PARTIAL_IDENTITY.items()
               if key not in recorded or not (_same_spec(str(recorded[key]), str(meta[key])) if key == "spec"
                                              else np.array_equal(recorded[key], np.asarray(meta[key])))]
    if differs:
        was = (f"was computed from {recorded['spec']}" if "spec" in recorded else "was written by an older s2r")
        if "inputs" not in recorded:
            why = "does not record which files it was computed from"
        else:
            why = "differs in " + ", ".join(differs)
        if overwrite:
            warn(f"discarding the partial result {part}: it {was} and {why} (--overwrite)")
            return 0
        raise S2RError(f"partial result {part} {was}, not from {meta['spec']}: it {why}",
                       hint=f"delete {part} (or pass --overwrite) to start afresh, or resume it with "
                            "the dataset it was computed from")
    if not np.array_equal(recorded["levels"], np.asarray(meta["levels"])):
        warn(f"setting aside the partial result {part}: it was computed at levels {recorded['levels'].tolist()}, "
             f"not {np.asarray(meta['levels']).tolist()}; starting afresh")
        return 0
    try:
        features[:] = recorded["features"]
        class_pixels[:] = recorded["class_pixels"]
        done[:] = recorded["done"]
    except (KeyError, ValueError) as exc:
        warn(f"ignoring unreadable partial result {part}: {exc}")
        done[:] = False
        return 0
    if "skipped" in recorded:
        done[np.asarray(recorded["skipped"], bool)] = False  # left out as unreadable: tried again
    restored = int(done.sum())
    info(f"resuming from {part}: {restored}/{len(done)} images already done")
    return restored
