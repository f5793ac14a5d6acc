"""The data source of segmenter training: labelled images from one or more datasets,
as endless augmented batches, deterministic by draw index (so resume is exact)."""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, DataLoader

from ..errors import S2RError
from .source import DataSource
from .torchdata import ImageLabelDataset


class _CachedItems(torch.utils.data.Dataset):
    """Wraps a map-style dataset of dicts; keeps items in memory once read (within a budget)."""

    def __init__(self, base: torch.utils.data.Dataset, cache: bool):
        self.base, self.cache = base, cache
        self._items: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self._items.get(i)
        if item is None:
            raw = self.base[i]
            item = {"image": raw["image"], "label": raw["label"]}
            if self.cache:
                self._items[i] = item
        return item


class _AugmentedPositions(torch.utils.data.Dataset):
    """Item ``p`` is the sample at global draw position ``p``: a pure function of ``(seed, p)``.

    Order: one seeded permutation of the union per epoch (``p // N``); then a
    seeded horizontal flip and a random scale-crop resized back to the size.
    """

    def __init__(self, items: _CachedItems, seed: int, flip: bool, crop_scale: Sequence[float]):
        self.items, self.seed, self.flip = items, int(seed), bool(flip)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1])) if crop_scale else (1.0, 1.0)
        self._perm_epoch, self._perm = -1, np.arange(0)

    def index_for(self, p: int) -> int:
        n = len(self.items)
        epoch = p // n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 0x5E6, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[p % n])

    def __len__(self) -> int:
        return 2**62  # positions are unbounded; the batch sampler picks them

    def __getitem__(self, p: int) -> dict[str, torch.Tensor]:
        item = self.items[self.index_for(p)]
        image, label = item["image"], item["label"]
        rng = np.random.default_rng([self.seed, 0xA06, p])
        if self.flip and rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        lo, hi = self.crop_scale
        scale = rng.uniform(lo, hi) if hi > lo else lo
        if scale < 1.0:
            h, w = label.shape
            ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            image = image[:, y0:y0 + ch, x0:x0 + cw]
            label = label[y0:y0 + ch, x0:x0 + cw]
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            label = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        return {"image": image.contiguous(), "label": label.contiguous(), "position": p}


class _BatchPositions(torch.utils.data.Sampler):
    """Endless batches of positions: rank r takes batches k = r, r + W, r + 2W, ... from ``start``."""

    def __init__(self, batch_size: int, start: int, rank: int, world: int):
        self.batch_size, self.start, self.rank, self.world = batch_size, start, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            k = position * self.world + self.rank
            yield list(range(k * self.batch_size, (k + 1) * self.batch_size))
            position += 1


class SegmentationData(DataSource):
    """Labelled images from one or more datasets, as endless augmented batches.

    Deterministic by draw index: batch ``k`` depends only on ``(seed, k)``, so a
    resumed run sees the very batches an uninterrupted one would, with or
    without loader workers; ranks take disjoint batches.
    """

    def __init__(
        self,
        datasets: Sequence[Any],
        *,
        size: Sequence[int] | None,
        batch_size: int,
        seed: int = 0,
        flip: bool = True,
        crop_scale: Sequence[float] = (1.0, 1.0),
        workers: int = 0,
        cache_mb: float = 1024,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not datasets:
            raise S2RError("no training data given", hint="pass --train SPEC[,SPEC...]")
        for ds in datasets:
            if not getattr(ds, "has_labels", False):
                raise S2RError(
                    f"training set {getattr(ds, 'root', ds)} has no labels",
                    hint="a segmenter trains on images with label maps (e.g. `s2r translate` output carries them)",
                )
            if len(ds) == 0:
                raise S2RError(f"training set {getattr(ds, 'root', ds)} has no images")
        size_t = (int(size[0]), int(size[1])) if size else None
        # on_error=skip in a spec: unreadable files are left out (and reported) as they are met
        union = ConcatDataset([ImageLabelDataset(ds, size=size_t, labels=True, skip_unreadable=True)
                               for ds in datasets])
        n = len(union)
        per_item_mb = (size_t[0] * size_t[1] * (3 * 4 + 8) / 2**20) if size_t else math.inf
        self.items = _CachedItems(union, cache=n * per_item_mb <= cache_mb)
        self.positions = _AugmentedPositions(self.items, seed, flip, crop_scale)
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.rank, self.world_size = int(rank), int(world_size)
        self.position = 0  # batches consumed by this rank

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(
            self.positions,
            batch_sampler=_BatchPositions(self.batch_size, self.position, self.rank, self.world_size),
            num_workers=self.workers,
            persistent_workers=False,
            # its own generator: without one, creating the loader draws a seed from torch's global RNG,
            # and a resumed run would then see other dropout and noise than an uninterrupted one
            generator=torch.Generator().manual_seed(self.positions.seed),
        )
        for batch in loader:
            self.position += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "SegmentationData", "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.position = int(state["position"])
