"""A :class:`~s2rcli.data.datasets.Dataset` as a torch ``Dataset`` of tensors."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

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


class ImageLabelDataset(torch.utils.data.Dataset):
    """Item ``i`` is ``{"image": float32 3xHxW in [-1, 1], "label": int64 HxW (255 ignore), "index": i}``.

    Images are resized bicubic and labels nearest to ``size=(H, W)``; ``size=None`` keeps each
    image's own size (labels are brought to it). ``labels=False`` leaves out "label".
    """

    def __init__(self, dataset: Dataset, size: tuple[int, int] | None = None, labels: bool = True):
        if labels and not dataset.has_labels:
            raise S2RError(f"{dataset.spec} has no labels", hint="this step needs a labelled dataset")
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise S2RError(f"invalid image size {size}")
        self.dataset, self.size, self.labels = dataset, size, labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.dataset):
            raise IndexError(index)
        image = self.dataset.read_image(index)
        size = self.size or image.shape[:2]
        item = {"image": image_to_tensor(resize_image(image, size)), "index": index}
        if self.labels:
            label = resize_label(self.dataset.read_label(index), size)
            item["label"] = torch.from_numpy(label.astype(np.int64))
        return item
