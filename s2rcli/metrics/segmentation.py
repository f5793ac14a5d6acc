"""Segmentation metrics from one confusion matrix.

Rows are ground truth, columns are predictions; pixels whose ground truth is
the ignore label (255) are left out. From the matrix:

- IoU of class c = TP / (TP + FP + FN);
- pixel accuracy = trace / total;
- class accuracy of c = TP / (TP + FN), and mean class accuracy its mean;
- mIoU = the mean IoU over classes.

A class absent from both the ground truth and the predictions has no IoU: it is
NaN (``null`` in JSON) and left out of every mean, as cityscapesscripts does. A
class that is only predicted has IoU 0 and counts. SYNTHIA-style subsets
(mIoU16, mIoU13) average the same per-class IoUs over a subset of classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..data.labels import get_label_space

IGNORE_INDEX = 255

# The SYNTHIA evaluation subsets as Cityscapes trainIds (19-class space):
# 16 classes lack terrain (9), truck (14) and train (16); 13 also lack wall, fence, pole (3, 4, 5).
SYNTHIA16_TRAIN_IDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA13_TRAIN_IDS = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)


def _as_numpy(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``num_classes x num_classes`` int64 counts; ``[gt, pred]``.

    Args:
        pred: predicted class ids, any shape (tensor or array).
        target: ground-truth ids, same shape; ``ignore_index`` pixels are skipped.
    """
    pred, target = _as_numpy(pred), _as_numpy(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from label shape {target.shape}")
    target = target.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"label values must be in [0, {num_classes}) or {ignore_index}; found {target.max()}")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class ids must be in [0, {num_classes}); found {pred.min()}..{pred.max()}")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU for each class; NaN where the class is in neither ground truth nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN where the class has no ground-truth pixel."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def _none_if_nan(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass
class SegmentationScores:
    """The numbers reported by ``segment-eval``; ``to_dict()`` is the JSON form."""

    class_names: tuple[str, ...]
    iou: np.ndarray
    class_accuracy: np.ndarray
    miou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    num_pixels: int
    subsets: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "miou": _none_if_nan(self.miou),
            "pixel_accuracy": _none_if_nan(self.pixel_accuracy),
            "mean_class_accuracy": _none_if_nan(self.mean_class_accuracy),
            "num_pixels": int(self.num_pixels),
            "per_class_iou": {n: _none_if_nan(float(v)) for n, v in zip(self.class_names, self.iou)},
            "per_class_accuracy": {n: _none_if_nan(float(v)) for n, v in zip(self.class_names, self.class_accuracy)},
            "subsets": {k: _none_if_nan(v) for k, v in self.subsets.items()},
        }


def scores_from_confusion(
    cm: np.ndarray,
    class_names: Sequence[str] | None = None,
    subsets: Mapping[str, Sequence[int]] | None = None,
) -> SegmentationScores:
    """All metrics from a confusion matrix.

    Args:
        cm: ``[gt, pred]`` counts.
        class_names: one per row; defaults to ``"0", "1", ...``.
        subsets: name -> class indices, e.g. ``{"miou16": SYNTHIA16_TRAIN_IDS}``;
            each reports the mean IoU over those classes.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n))
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    iou = per_class_iou(cm)
    acc = per_class_accuracy(cm)
    total = int(cm.sum())
    subset_scores = {}
    for name, indices in (subsets or {}).items():
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"subset {name!r} has class indices outside [0, {n})")
        subset_scores[name] = _nanmean(iou[idx])
    return SegmentationScores(
        class_names=names,
        iou=iou,
        class_accuracy=acc,
        miou=_nanmean(iou),
        pixel_accuracy=float(np.trace(cm) / total) if total else float("nan"),
        mean_class_accuracy=_nanmean(acc),
        num_pixels=total,
        subsets=subset_scores,
    )


class ConfusionMatrix:
    """Accumulates a confusion matrix over many predictions.

    >>> cm = ConfusionMatrix(19)
    >>> cm.update(logits.argmax(1), labels)
    >>> cm.scores(class_names).miou
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def scores(
        self, class_names: Sequence[str] | None = None, subsets: Mapping[str, Sequence[int]] | None = None
    ) -> SegmentationScores:
        return scores_from_confusion(self.matrix, class_names, subsets)


def subset_indices(subset: str, base_space: str = "cityscapes19") -> list[int]:
    """Indices in ``base_space`` of the classes of label space ``subset``, matched by name.

    ``subset_indices("synthia16")`` gives the 16 SYNTHIA evaluation classes as
    Cityscapes trainIds.
    """

    base = get_label_space(base_space).class_names
    sub = get_label_space(subset).class_names
    missing = [n for n in sub if n not in base]
    if missing:
        raise ValueError(f"classes {missing} of {subset} are not in {base_space}")
    return [base.index(n) for n in sub]


def default_subsets(space_name: str) -> dict[str, list[int]]:
    """The SYNTHIA-style subsets reported for the 19-class Cityscapes space (mIoU16, mIoU13); none otherwise.

    They equal ``subset_indices("synthia16")`` and ``subset_indices("synthia13")`` (a test checks it).
    """
    if space_name != "cityscapes19":
        return {}
    return {"miou16": list(SYNTHIA16_TRAIN_IDS), "miou13": list(SYNTHIA13_TRAIN_IDS)}
