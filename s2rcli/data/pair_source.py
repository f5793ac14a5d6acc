"""The data source of translation tasks: (synthetic, real) pairs, batched and augmented.

A pair sampler (random, or the SP-Feat smart batch loader) says which
synthetic image goes with which real one; this module reads both, applies a
random scale-crop and horizontal flip, and stacks them into batches::

    {"a": Bx3xHxW float in [-1, 1] (synthetic), "b": Bx3xHxW (real),
     "a_label": BxHxW int64 (synthetic labels, 255 = ignore; only with labels=True),
     "index": Bx2 int64 (synthetic, real) dataset indices, "draw": B int64 draw indices}

Every random choice is a pure function of ``(seed, draw index)``, never of a
global RNG, so a resumed run sees exactly the batches the uninterrupted run
would have seen, with or without worker processes.

Loading never has to stall a step: each file is decoded once and kept (a
:class:`DecodedCache` within ``cache_mb``), and with ``workers > 0`` a
DataLoader prepares ``prefetch`` batches per worker ahead of the loop, in
pinned memory when a GPU is present. None of this changes a batch's content.
"""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import S2RError
from . import io
from .sampler import make_pair_sampler as _sampler
from .source import DataSource
from .torchdata import SkipUnreadable


class DecodedCache:
    """Decoded images (and labels) kept in memory up to ``budget_bytes``: each file is decoded once.

    It fills until the budget is reached and then keeps what it holds (no eviction): memory stays
    flat, and with random access an LRU would hit no more often. Cached arrays are read-only, so no
    consumer can change them; a failed read is not cached.
    """

    def __init__(self, budget_bytes: float):
        self.budget = max(0, int(budget_bytes))
        self.used = 0
        self.hits = self.misses = 0
        self._items: dict[Any, Any] = {}

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        item = self._items.get(key)
        if item is not None:
            self.hits += 1
            return item
        self.misses += 1
        item = load()
        if self.budget:
            parts = item if isinstance(item, tuple) else (item,)
            size = sum(a.nbytes for a in parts if isinstance(a, np.ndarray))
            if self.used + size <= self.budget:
                frozen = tuple(_read_only(a) for a in parts)
                item = frozen if isinstance(item, tuple) else frozen[0]
                self._items[key] = item
                self.used += size
        return item

    def reader(self, tag: str, read: Callable[[int], Any]) -> Callable[[int], Any]:
        """``read`` through the cache, keyed by ``(tag, index)`` (picklable, for spawned workers)."""
        return _CachedReader(self, tag, read)


class _CachedReader:
    def __init__(self, cache: DecodedCache, tag: str, read: Callable[[int], Any]):
        self.cache, self.tag, self.read = cache, tag, read

    def __call__(self, i: int) -> Any:
        return self.cache.get((self.tag, int(i)), lambda: self.read(i))


def _read_only(value: Any) -> Any:
    """A read-only view of an array (the caller's own array keeps its flags); other values as they are."""
    if not isinstance(value, np.ndarray):
        return value
    view = value.view()
    view.flags.writeable = False
    return view


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def scale_crop_flip(image: np.ndarray, label: np.ndarray | None, size: Sequence[int], rng: np.random.Generator | None,
                    *, scale_jitter: float = 0.125, flip: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize ``image`` (HxWx3 uint8) to cover ``size`` times a random factor in
    ``[1, 1 + scale_jitter]``, crop ``size`` at a random offset, flip with p = 0.5.

    With ``rng=None`` it is deterministic: cover ``size`` exactly and crop the centre.
    Labels follow with nearest-neighbour resizing.
    """
    out_h, out_w = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    jitter = 1.0 + (rng.uniform(0.0, scale_jitter) if rng is not None and scale_jitter > 0 else 0.0)
    scale = max(out_h / h, out_w / w) * jitter
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
        if label is not None:
            label = np.asarray(Image.fromarray(label).resize((new_w, new_h), Image.NEAREST))
    if rng is not None:
        top, left = int(rng.integers(new_h - out_h + 1)), int(rng.integers(new_w - out_w + 1))
        mirror = flip and bool(rng.integers(2))
    else:
        top, left, mirror = (new_h - out_h) // 2, (new_w - out_w) // 2, False
    image = image[top:top + out_h, left:left + out_w]
    label = label[top:top + out_h, left:left + out_w] if label is not None else None
    if mirror:
        image = image[:, ::-1]
        label = label[:, ::-1] if label is not None else None
    return image, label


class PairDataSource(DataSource):
    """Endless batches of (synthetic, real) pairs drawn by a :class:`~s2rcli.data.sampler.PairSampler`.

    Args:
        synthetic, real: datasets with ``read_image(i)`` (and ``read_label(i)`` for labels).
        sampler: the pair sampler (already sharded to this rank).
        batch_size: pairs per batch (per rank).
        size: ``(H, W)`` of the training crops.
        seed: seeds the augmentations, together with each pair's draw index.
        labels: also return the synthetic labels (label-to-image models).
        workers: DataLoader worker processes (0 = load in the training process).
        cache_mb: decoded images kept in memory (:class:`DecodedCache`), split evenly across workers.
        prefetch: batches each worker prepares ahead.

    A dataset opened with ``on_error=skip`` has its unreadable files left out as they are met
    (each reported); the next readable sample stands in (:class:`~s2rcli.data.torchdata.SkipUnreadable`),
    and ``index`` holds the indices actually read.
    """

    def __init__(self, synthetic, real, sampler, *, batch_size: int, size: Sequence[int], seed: int = 0,
                 labels: bool = False, workers: int = 0, scale_jitter: float = 0.125, flip: bool = True,
                 cache_mb: float = 0, prefetch: int = 2):
        self.synthetic, self.real, self.sampler = synthetic, real, sampler
        self.batch_size, self.size, self.seed = int(batch_size), (int(size[0]), int(size[1])), int(seed)
        self.labels, self.workers = labels, int(workers)
        self.scale_jitter, self.flip = float(scale_jitter), flip
        self.prefetch = max(1, int(prefetch))
        self.consumed = int(sampler.position)  # draws handed to the loop (workers may have pre-fetched more)
        self._read_synthetic = SkipUnreadable(synthetic, "synthetic")
        self._read_real = SkipUnreadable(real, "real")
        # Each worker process holds its own copy of the cache, so the budget is shared out among them.
        self.cache = DecodedCache(float(cache_mb) * 2**20 / max(1, self.workers))
        self._cached_synthetic = self.cache.reader("synthetic", self._synthetic_uncached)
        self._cached_real = self.cache.reader("real", real.read_image)

    def _synthetic_uncached(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.synthetic.read_image(i), (self.synthetic.read_label(i) if self.labels else None)

    def _synthetic(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self._cached_synthetic(i)

    # --- items -------------------------------------------------------------------------------------

    def load(self, k: int, si: int, ri: int) -> dict[str, torch.Tensor]:
        """Draw ``k``: synthetic image ``si`` and real image ``ri``, augmented by ``(seed, k)``."""
        rng_a = np.random.default_rng([self.seed, int(k), 0])
        rng_b = np.random.default_rng([self.seed, int(k), 1])
        si, (image, label) = self._read_synthetic.read(si, self._synthetic)
        ri, real = self._read_real.read(ri, self._cached_real)
        a, a_label = scale_crop_flip(image, label, self.size, rng_a, scale_jitter=self.scale_jitter, flip=self.flip)
        b, _ = scale_crop_flip(real, None, self.size, rng_b, scale_jitter=self.scale_jitter, flip=self.flip)
        item = {"a": _to_tensor(a), "b": _to_tensor(b), "index": torch.tensor([si, ri]), "draw": torch.tensor(k)}
        if a_label is not None:
            item["a_label"] = torch.from_numpy(np.array(a_label, dtype=np.int64))
        return item

    def _plan(self) -> Iterator[list[tuple[int, int, int]]]:
        """Batches of ``(draw index, synthetic index, real index)``, advancing the sampler."""
        s = self.sampler
        pairs = iter(s)
        while True:
            batch = []
            for _ in range(self.batch_size):
                k = s.position * s.world_size + s.rank  # the draw index the sampler is about to use
                si, ri = next(pairs)
                batch.append((k, si, ri))
            yield batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.sampler.position = self.consumed
        if self.workers <= 0:
            for plan in self._plan():
                batch = torch.utils.data.default_collate([self.load(*p) for p in plan])
                self.consumed += len(plan)
                yield batch
            return
        loader = torch.utils.data.DataLoader(
            _PlanItems(self), batch_sampler=_PlanIterable(self), num_workers=self.workers,
            persistent_workers=False, pin_memory=torch.cuda.is_available(), prefetch_factor=self.prefetch,
            # Its own generator: the workers' seeds are drawn from it, not from the global RNG, so
            # starting the workers leaves the training's random stream (noise, dropout) as it is:
            # the same losses as with 0 workers, and an exact resume.
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in loader:  # the DataLoader keeps batch order, whatever the worker timing
            self.consumed += batch["a"].shape[0]
            yield batch

    # --- resume and previews ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.sampler.state_dict())
        state["position"] = self.consumed
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.sampler.load_state_dict(state)
            self.consumed = int(state["position"])

    def fixed_batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        """``n`` evenly spaced synthetic and real images, centre-cropped: the sample grids' inputs."""
        si = np.unique(np.linspace(0, len(self.synthetic) - 1, n).round().astype(int))
        ri = np.unique(np.linspace(0, len(self.real) - 1, n).round().astype(int))
        m = min(len(si), len(ri))
        items = []
        for s_idx, r_idx in zip(si[:m], ri[:m]):
            s_idx, (image, label) = self._read_synthetic.read(int(s_idx), self._synthetic)
            r_idx, real = self._read_real.read(int(r_idx), self.real.read_image)
            a, a_label = scale_crop_flip(image, label, self.size, None)
            b, _ = scale_crop_flip(real, None, self.size, None)
            item = {"a": _to_tensor(a), "b": _to_tensor(b), "index": torch.tensor([int(s_idx), int(r_idx)])}
            if a_label is not None:
                item["a_label"] = torch.from_numpy(np.array(a_label, dtype=np.int64))
            items.append(item)
        return torch.utils.data.default_collate(items)


class _PlanItems(torch.utils.data.Dataset):
    def __init__(self, source: PairDataSource):
        self.source = source

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        return self.source.load(*key)


class _PlanIterable:
    def __init__(self, source: PairDataSource):
        self.source = source

    def __iter__(self):
        return self.source._plan()


def make_pair_source(cfg: dict[str, Any], data: dict[str, Any], dist, *, labels: bool = False) -> PairDataSource:
    """The standard data source of a translation task, from the resolved config.

    ``data`` is ``{"synthetic": Dataset, "real": Dataset}``; ``labels=True`` adds
    the synthetic labels (label-to-image models).
    """
    for key in ("synthetic", "real"):
        if key not in data or data[key] is None or len(data[key]) == 0:
            raise S2RError(f"the {key} dataset is empty", hint=f"check the --{key} spec")
    refuse_same_images(data["synthetic"], data["real"])
    if labels and not data["synthetic"].has_labels:
        raise S2RError("this model needs synthetic labels, but the --synthetic dataset has none",
                       hint="point --synthetic at a dataset with label maps")
    train, data_cfg = cfg["train"], cfg["data"]
    sampler = _sampler(bool(data_cfg.get("smart_batch")), data_cfg.get("pairs"), data["synthetic"], data["real"],
                       seed=int(cfg.get("seed", 0)), rank=dist.rank, world_size=dist.world_size)
    return PairDataSource(
        data["synthetic"], data["real"], sampler, batch_size=int(train["batch_size"]), size=data_cfg["size"],
        seed=int(cfg.get("seed", 0)), labels=labels, workers=int(train.get("workers", 0)),
        scale_jitter=float(data_cfg.get("scale_jitter", 0.125)), flip=bool(data_cfg.get("flip", True)),
        cache_mb=float(train.get("cache_mb", 1024)), prefetch=int(train.get("prefetch", 2)),
    )


def same_images(a, b) -> str | None:
    """Why two datasets hold the very same images (None if they do not): the same object, the same
    image files (after resolving links and spellings of the path), or byte-identical copies of them
    under the same names (compared only when names and sizes already agree,
    :func:`s2rcli.data.io.dataset_fingerprint`)."""
    if a is b:
        return "are the same dataset"
    files_a = [getattr(s, "image", None) for s in getattr(a, "samples", None) or []]
    files_b = [getattr(s, "image", None) for s in getattr(b, "samples", None) or []]
    if files_a and files_b and None not in files_a and None not in files_b and len(files_a) == len(files_b):
        if {Path(p).resolve() for p in files_a} == {Path(p).resolve() for p in files_b}:
            return f"read the same image files ({getattr(a, 'spec', '')} and {getattr(b, 'spec', '')})"
        fingerprint = io.dataset_fingerprint(a)
        if fingerprint and fingerprint == io.dataset_fingerprint(b):  # same names and sizes: compare the bytes
            by_name = {s.name: s.image for s in b.samples}
            if all(filecmp.cmp(s.image, by_name[s.name], shallow=False) for s in a.samples):
                return f"hold copies of the same images ({getattr(a, 'spec', '')} and {getattr(b, 'spec', '')})"
    return None


def refuse_same_images(synthetic, real) -> None:
    """:class:`S2RError` when ``synthetic`` and ``real`` hold the same images (:func:`same_images`)."""
    why = same_images(synthetic, real)
    if why:
        raise S2RError(f"--synthetic and --real {why}: a translator learns nothing from a dataset paired with itself",
                       hint="pass the synthetic (source) images as --synthetic and the real (target) images as --real")
