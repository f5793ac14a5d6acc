"""A :class:`~s2rcli.data.datasets.Dataset` as a torch ``Dataset`` of tensors."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..console import warn
from ..errors import S2RError
from .datasets import Dataset


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> float32 3xHxW in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """float 3xHxW in [-1, 1] -> HxWx3 uint8 (values are clamped and rounded)."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of HxWx3 uint8 to (H, W) (PIL, so results match other PIL-based tools)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW label map to (H, W)."""
    height, width = size
    if label.shape[:2] == (height, width):
        return label
    return np.asarray(Image.fromarray(label).resize((width, height), Image.Resampling.NEAREST))


class SkipUnreadable:
    """Reads samples of one dataset for training, honouring its ``on_error`` option.

    ``read(i, reader)`` returns ``(j, reader(j))``. With ``on_error=fail`` (the default) ``j == i`` and a
    file that cannot be read (empty, truncated, corrupt: an :class:`S2RError` from the readers) stops
    the run naming it. With ``on_error=skip`` such a sample is left out with a warning that names
    it and counts those left out so far, and the next readable sample (``i + 1``, ``i + 2``, ...,
    wrapping round) stands in for it. The stand-in depends only on the files, never on what was
    read before, so draws stay a pure function of their index (exact resume, same batches with
    or without worker processes). When no sample of the dataset can be read, that is an error.
    """

    def __init__(self, dataset: Any, role: str = "dataset"):
        self.dataset, self.role = dataset, role
        self.skip = getattr(dataset, "on_error", "fail") == "skip"
        self.unreadable: set[int] = set()

    def read(self, i: int, reader: Callable[[int], Any]) -> tuple[int, Any]:
        n = len(self.dataset)
        if not self.skip:
            return i, reader(i)
        for step in range(n):
            j = (int(i) + step) % n
            if j in self.unreadable:
                continue
            try:
                return j, reader(j)
            except S2RError as exc:
                self.unreadable.add(j)
                names = getattr(self.dataset, "names", None)
                name = names[j] if names is not None else f"sample {j}"
                warn(f"{self.role}: left out {name} ({len(self.unreadable)} of {n} so far, on_error=skip): "
                     f"{exc.message}")
        spec = getattr(self.dataset, "spec", self.role)
        raise S2RError(f"no sample of {spec} could be read: all {n} were left out as unreadable (on_error=skip)",
                       hint="check the files named in the warnings above, or the dataset spec")


class ImageLabelDataset(torch.utils.data.Dataset):
    """Item ``i`` is ``{"image": float32 3xHxW in [-1, 1], "label": int64 HxW (255 ignore), "index": i}``.

    Images are resized bicubic and labels nearest to ``size=(H, W)``; ``size=None`` keeps each
    image's own size (labels are brought to it). ``labels=False`` leaves out "label".

    ``skip_unreadable=True`` (training) honours the dataset's ``on_error=skip``: an unreadable sample
    is replaced by the next readable one (:class:`SkipUnreadable`), and ``index`` says which.
    """

    def __init__(self, dataset: Dataset, size: tuple[int, int] | None = None, labels: bool = True, *,
                 skip_unreadable: bool = False):
        if labels and not dataset.has_labels:
            raise S2RError(f"{dataset.spec} has no labels", hint="this step needs a labelled dataset")
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise S2RError(f"invalid image size {size}")
        self.dataset, self.size, self.labels = dataset, size, labels
        self.skipper = SkipUnreadable(dataset, getattr(dataset, "spec", "dataset")) if skip_unreadable else None

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image = self.dataset.read_image(index)
        return image, (self.dataset.read_label(index) if self.labels else None)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.dataset):
            raise IndexError(index)
        if self.skipper is not None:
            index, (image, label) = self.skipper.read(index, self._read)
        else:
            image, label = self._read(index)
        size = self.size or image.shape[:2]
        item = {"image": image_to_tensor(resize_image(image, size)), "index": index}
        if self.labels:
            item["label"] = torch.from_numpy(resize_label(label, size).astype(np.int64))
        return item
