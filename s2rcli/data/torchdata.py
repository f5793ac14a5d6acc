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


# --- the resize policy of evaluation and segmenter training --------------------------------------
#
# A frame is brought to a working size (H, W) by "cover, then centre-crop": it is scaled by
# max(H / h, W / w), so it covers the working size with its aspect ratio kept, and the centre
# H x W is cut out. A 4:3 Mapillary frame at 256x512 loses a band at the top and bottom instead
# of being squashed; a 2:1 Cityscapes frame is only scaled. Translator training crops the same
# way (data/pair_source.py scale_crop_flip, at random offsets there). Scoring maps the crop back
# onto the label: see cover_crop_window.


def cover_crop_geometry(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)``: scale ``height x width`` to cover ``size`` (aspect kept), then
    the centre ``size`` window starts at ``(top, left)`` of the scaled frame."""
    out_h, out_w = int(size[0]), int(size[1])
    scale = max(out_h / height, out_w / width)
    new_h, new_w = max(out_h, round(height * scale)), max(out_w, round(width * scale))
    return new_h, new_w, (new_h - out_h) // 2, (new_w - out_w) // 2


def cover_crop_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 to ``size`` by the policy above: bicubic scale to cover, centre crop (never distorted)."""
    new_h, new_w, top, left = cover_crop_geometry(image.shape[0], image.shape[1], size)
    scaled = resize_image(image, (new_h, new_w))
    return np.ascontiguousarray(scaled[top:top + int(size[0]), left:left + int(size[1])])


def cover_crop_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW label map to ``size`` the same way (nearest-neighbour scaling)."""
    new_h, new_w, top, left = cover_crop_geometry(label.shape[0], label.shape[1], size)
    scaled = resize_label(label, (new_h, new_w))
    return np.ascontiguousarray(scaled[top:top + int(size[0]), left:left + int(size[1])])


def cover_crop_window(image_shape: tuple[int, int], size: tuple[int, int],
                      target_shape: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the part of a frame that :func:`cover_crop_image` keeps, in the pixels of
    ``target_shape`` (the frame's label, at its own resolution; default the image's shape).

    Scoring predicts on the cover-cropped image and compares, at the label's full resolution,
    only this window of the label: its pixels are the ones the segmenter saw.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    th, tw = (height, width) if target_shape is None else (int(target_shape[0]), int(target_shape[1]))
    new_h, new_w, top, left = cover_crop_geometry(height, width, size)
    y0, y1 = round(top * th / new_h), round((top + int(size[0])) * th / new_h)
    x0, x1 = round(left * tw / new_w), round((left + int(size[1])) * tw / new_w)
    return y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)


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

    With ``size=(H, W)``, images (bicubic) and labels (nearest) are scaled to cover it with their
    aspect ratio kept and centre-cropped (:func:`cover_crop_image`), never squashed; ``size=None``
    keeps each image's own size (labels are brought to it). ``labels=False`` leaves out "label".

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
        if self.size is None:
            size = image.shape[:2]
            item = {"image": image_to_tensor(image), "index": index}
            if self.labels:
                item["label"] = torch.from_numpy(resize_label(label, size).astype(np.int64))
            return item
        item = {"image": image_to_tensor(cover_crop_image(image, self.size)), "index": index}
        if self.labels:
            item["label"] = torch.from_numpy(cover_crop_label(label, self.size).astype(np.int64))
        return item
