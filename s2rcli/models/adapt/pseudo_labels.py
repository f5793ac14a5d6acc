"""Offline pseudo-labels for self-training (SAIT, Eq. 9): the starting segmenter's
confident predictions on the real images, everything else ignored.

A pixel keeps its argmax class when the softmax probability of that class is at
least ``threshold`` (0.9 in the paper); otherwise it becomes 255 (ignore). The
labels are made once, before training, at the image's own resolution (logits
computed at the working size are resized bilinearly first, as segment-eval
does), and written as 8-bit PNGs named after the images. ``report.json`` beside
them records what made them and, per class, the share of its predicted pixels
that was kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rich.table import Table
from torch.nn import functional as F

from ...console import console, settings, track
from ...data import io
from ...data.torchdata import image_to_tensor, resize_image
from ...losses.segmentation import IGNORE_INDEX
from ...utils.atomic import atomic_write_json

REPORT = "report.json"


@torch.no_grad()
def pseudo_label(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``B x C x H x W`` logits -> ``B x H x W`` uint8 labels: the argmax where its probability
    is at least ``threshold``, else 255."""
    confidence, label = F.softmax(logits.float(), dim=1).max(dim=1)
    return torch.where(confidence >= threshold, label, torch.full_like(label, IGNORE_INDEX)).to(torch.uint8)


def kept_counts(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: pixels predicted (argmax), and of those kept by the threshold."""
    predicted = torch.bincount(logits.argmax(1).flatten(), minlength=num_classes)[:num_classes]
    kept = torch.bincount(labels[labels != IGNORE_INDEX].long().flatten(), minlength=num_classes)[:num_classes]
    return predicted.cpu().numpy().astype(np.int64), kept.cpu().numpy().astype(np.int64)


def kept_report(predicted: np.ndarray, kept: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """``{"kept_share": x, "per_class": {name: {"predicted", "kept", "share"}}}`` (share ``None`` when never predicted)."""
    per_class = {
        name: {"predicted": int(p), "kept": int(k), "share": (float(k) / float(p)) if p else None}
        for name, p, k in zip(class_names, predicted, kept)
    }
    total = int(predicted.sum())
    return {"pixels": total, "kept_pixels": int(kept.sum()),
            "kept_share": float(kept.sum()) / total if total else None, "per_class": per_class}


class PseudoLabelled:
    """``dataset``'s images with pseudo-labels read from ``folder`` (``NAME.png`` for image ``NAME``):
    a labelled dataset for :class:`~s2rcli.data.seg_source.SegmentationData`."""

    has_labels = True

    def __init__(self, dataset: Any, folder: str | Path):
        self.dataset, self.folder = dataset, Path(folder)
        self.names = list(dataset.names)
        self.spec = f"{getattr(dataset, 'spec', dataset)} with pseudo-labels from {self.folder}"
        self.root = self.folder
        self.on_error = getattr(dataset, "on_error", "fail")

    def __len__(self) -> int:
        return len(self.dataset)

    def read_image(self, i: int) -> np.ndarray:
        return self.dataset.read_image(i)

    def read_label(self, i: int) -> np.ndarray:
        return io.read_index_label(self.folder / f"{self.names[i]}.png")


def write_pseudo_labels(segmenter: torch.nn.Module, dataset: Any, folder: str | Path, *, threshold: float,
                        size: Sequence[int] | None, class_names: Sequence[str], identity: dict[str, Any],
                        device: torch.device | str = "cpu") -> dict[str, Any]:
    """Label every image of ``dataset`` with ``segmenter`` into ``folder``; returns the report.

    When ``folder/report.json`` already holds a complete set made with the same ``identity``
    (segmenter, threshold, size, images), the files are reused (a resumed run) and
    nothing is recomputed.
    """
    folder = Path(folder)
    identity = {**identity, "threshold": float(threshold), "size": list(size) if size else None,
                "images": len(dataset)}
    previous = _read_report(folder)
    if previous is not None and previous.get("identity") == identity and all(
            (folder / f"{name}.png").is_file() for name in dataset.names):
        return previous
    was_training = segmenter.training
    segmenter.eval()
    num_classes = len(class_names)
    predicted, kept = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for i in track(range(len(dataset)), total=len(dataset), description="pseudo-labels"):
        image = np.ascontiguousarray(dataset.read_image(i)[..., :3])
        x = image_to_tensor(resize_image(image, tuple(size)) if size else image)
        logits = segmenter(x[None].to(device)).float()
        if tuple(logits.shape[-2:]) != image.shape[:2]:
            logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        labels = pseudo_label(logits, threshold)
        p, k = kept_counts(logits, labels, num_classes)
        predicted += p
        kept += k
        io.write_png(labels[0].cpu().numpy(), folder / f"{dataset.names[i]}.png")
    segmenter.train(was_training)
    report = {"identity": identity, **kept_report(predicted, kept, class_names)}
    atomic_write_json(folder / REPORT, report, overwrite=True)
    return report


def _read_report(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / REPORT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def print_kept_table(report: dict[str, Any], title: str) -> None:
    """The per-class share of pixels kept, as a table on the console (not under --quiet)."""
    if settings.quiet:
        return
    table = Table(title=title)
    for column, justify in (("class", "left"), ("predicted px", "right"), ("kept px", "right"), ("kept %", "right")):
        table.add_column(column, justify=justify)
    for name, row in report["per_class"].items():
        if row["predicted"]:
            table.add_row(name, str(row["predicted"]), str(row["kept"]), f"{100 * row['share']:.1f}")
    table.add_section()
    share = report["kept_share"]
    table.add_row("all", str(report["pixels"]), str(report["kept_pixels"]), "-" if share is None else f"{100 * share:.1f}")
    console.print(table)
