"""The functions behind ``s2r segment-eval``: score generated images with a
segmenter, test a segmenter on a labelled set, and train a segmenter on some
sets and test it on another.

Both report the metrics of :mod:`s2rcli.metrics.segmentation`. Predictions are
made at a working size (the segmenter's training size by default), reached as in
segmenter training: the image is scaled to cover it with its aspect ratio kept and
centre-cropped, never squashed. The logits are resized bilinearly onto the same
window of each label map at the label's own resolution before the argmax, so every
labelled pixel the segmenter saw counts once, at full resolution (a frame of the
working size's aspect ratio is scored whole).

>>> from s2rcli.evaluation import train_and_test
>>> results = train_and_test(["demo:w?split=synthetic"], "demo:w?split=real_val", "fastseg", "runs/seg", steps=600)
>>> results["scores"]["miou"]
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from rich.table import Table
from torch.nn import functional as F

from .checkpoint import load_checkpoint
from .console import settings, track, warn
from .data import io as data_io
from .data.datasets import open_dataset
from .data.label_formats import open_with_label_format
from .data.labels import get_label_space
from .data.torchdata import cover_crop_image, cover_crop_window, image_to_tensor, resize_image
from .device import resolve_device
from .errors import S2RError
from .metrics.fid import open_images
from .metrics.segmentation import ConfusionMatrix, default_subsets
from .models import get_model_entry, model_from_checkpoint
from .training.runner import train_run
from .utils.atomic import atomic_write_json

SAMPLE_SUFFIX = re.compile(r"^(?P<base>.+)_s\d+$")
"""Label-to-image outputs may hold several samples per label map: ``name_s00``, ``name_s01``, ..."""


# --- segmenters from checkpoints ---------------------------------------------------------


def load_segmenter(path: str | Path, device: torch.device | str = "cpu"):
    """``(model, checkpoint, label_space)`` for a segmenter checkpoint; refuses other models."""
    ckpt = load_checkpoint(path)
    entry = get_model_entry(str(ckpt.get("model")))
    if entry.kind != "segmenter":
        raise S2RError(
            f"{path} is a {entry.kind} checkpoint ({entry.name}), not a segmenter",
            hint="pass a checkpoint written by `s2r segment-eval train-and-test` (RUN/checkpoints/latest.pt)",
        )
    model, ckpt = model_from_checkpoint(ckpt)
    space = get_label_space(ckpt.get("label_space") or "cityscapes19")
    if int(model.num_classes) != space.num_classes:
        raise S2RError(
            f"{path}: the segmenter predicts {model.num_classes} classes but its label space "
            f"{space.name} has {space.num_classes}",
        )
    return model.to(device).eval(), ckpt, space


def checkpoint_size(ckpt: dict[str, Any]) -> tuple[int, int] | None:
    """The resolution the segmenter was trained at, from its stored config."""
    size = ((ckpt.get("config") or {}).get("data") or {}).get("size")
    return (int(size[0]), int(size[1])) if size else None


class SegmenterLabels:
    """A segmenter's argmax predictions standing in for the labels of ``dataset``
    (SP-Feat of real images without annotation): ``read_label(i)``, ``names`` and
    the ``source`` string that SP-Feat files record."""

    def __init__(self, dataset, checkpoint: str | Path, size: tuple[int, int] | None = None,
                 device: torch.device | str | None = None):
        space = dataset.space
        ckpt = load_checkpoint(checkpoint, map_location="cpu")
        model, _ = model_from_checkpoint(ckpt)
        model_classes = int(getattr(model, "num_classes", -1))
        if model_classes != space.num_classes:
            raise S2RError(
                f"segmenter {checkpoint} predicts {model_classes} classes, but the label space "
                f"{space.name!r} has {space.num_classes}",
                hint="pass --space matching the segmenter, or a segmenter trained in this label space",
            )
        ckpt_space = ckpt.get("label_space")
        if ckpt_space and ckpt_space != space.name:
            raise S2RError(f"segmenter {checkpoint} was trained in label space {ckpt_space!r}, not {space.name!r}",
                           hint=f"pass --space {ckpt_space}")
        self.dataset, self.size = dataset, size
        self.device = torch.device(device) if device is not None else resolve_device(settings.device)
        self.model = model.to(self.device).eval()
        self.source = f"segmenter:{Path(checkpoint).resolve()}"

    @property
    def names(self):
        return self.dataset.names

    def read_label(self, i: int) -> np.ndarray:
        image = self.dataset.read_image(i)
        if self.size is not None and tuple(image.shape[:2]) != tuple(self.size):
            image = resize_image(np.ascontiguousarray(image[..., :3]), self.size)
        x = image_to_tensor(np.ascontiguousarray(image[..., :3]))
        with torch.inference_mode():
            logits = self.model(x.unsqueeze(0).to(self.device))
        return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


# --- evaluation -----------------------------------------------------------------------------


def _prepare(image: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """The segmenter's input: at ``size`` by the resize policy (cover, then centre-crop; see
    :func:`s2rcli.data.torchdata.cover_crop_image`), or the image's own size for ``None``."""
    image = np.ascontiguousarray(image[..., :3])
    if size is not None:
        image = cover_crop_image(image, size)
    return image_to_tensor(image)


def _label_window(image_shape: tuple[int, int], size: tuple[int, int] | None,
                  label_shape: tuple[int, int]) -> tuple[slice, slice]:
    """The part of a label map the prediction covers: all of it at the image's own size, else the
    window that cover-and-centre-crop kept, in the label's own pixels."""
    if size is None:
        return slice(0, label_shape[0]), slice(0, label_shape[1])
    y0, y1, x0, x1 = cover_crop_window(image_shape, size, label_shape)
    return slice(y0, y1), slice(x0, x1)


def _to_window(logits: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    """1xCxhxw logits resized bilinearly to the window's size, at the label's resolution."""
    target = (rows.stop - rows.start, cols.stop - cols.start)
    if tuple(logits.shape[-2:]) != target:
        logits = F.interpolate(logits, size=target, mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def evaluate_pairs(
    model: torch.nn.Module,
    pairs: Sequence[tuple[Any, int, Any, int]],
    *,
    num_classes: int,
    size: tuple[int, int] | None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    description: str = "evaluating",
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` over ``(image_set, i, label_set, j)`` pairs.

    With ``size``, each image is scaled to cover it (aspect ratio kept) and centre-cropped, as in
    segmenter training; the logits are resized bilinearly onto the same window of the label, at
    the label's full resolution, and only that window is scored (a 2:1 frame at a 2:1 size is
    scored whole; a 4:3 frame at 2:1 loses a band at the top and bottom). ``None``: each image
    at its own size, one at a time, every label pixel scored.
    """
    device = torch.device(device)
    cm = ConfusionMatrix(num_classes)
    step = max(1, int(batch_size)) if size is not None else 1
    starts = range(0, len(pairs), step)
    model.eval()
    for start in track(starts, total=len(starts), description=description):
        chunk = pairs[start:start + step]
        shapes, prepared = [], []
        for img_set, i, _, _ in chunk:
            image = img_set.read_image(i)
            shapes.append(image.shape[:2])
            prepared.append(_prepare(image, size))
        logits = model(torch.stack(prepared).to(device)).float()
        for k, (_, _, lab_set, j) in enumerate(chunk):
            label = lab_set.read_label(j)
            rows, cols = _label_window(shapes[k], size, label.shape[:2])
            out = _to_window(logits[k:k + 1], rows, cols)
            cm.update(out.argmax(1)[0].cpu().numpy(), np.ascontiguousarray(label[rows, cols]))
    return cm


def evaluate_dataset(
    model: torch.nn.Module,
    dataset: Any,
    *,
    num_classes: int,
    size: tuple[int, int] | None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` on a labelled dataset."""
    if not dataset.has_labels:
        raise S2RError(f"{dataset.spec} has no labels to test against", hint="pass a labelled split, e.g. demo:DIR?split=real_val")
    pairs = [(dataset, i, dataset, i) for i in range(len(dataset))]
    return evaluate_pairs(model, pairs, num_classes=num_classes, size=size, batch_size=batch_size, device=device,
                          description=f"testing on {dataset.spec}")


def match_generated(generated_names: Sequence[str], label_names: Iterable[str]) -> tuple[list[tuple[int, int]], list[str]]:
    """Pair generated images with the label maps they came from, by name.

    ``name`` matches ``name``; ``name_sNN`` (one of several samples) matches
    ``name`` when no label is called ``name_sNN`` itself. Returns
    ``(generated index, label index)`` pairs and the unmatched generated names.
    """
    index = {name: j for j, name in enumerate(label_names)}
    pairs, unmatched = [], []
    for i, name in enumerate(generated_names):
        j = index.get(name)
        if j is None:
            m = SAMPLE_SUFFIX.match(name)
            j = index.get(m.group("base")) if m else None
        if j is None:
            unmatched.append(name)
        else:
            pairs.append((i, j))
    return pairs, unmatched


def score_generated(
    images: str,
    labels: str,
    segmenter: str | Path,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    label_space: str | None = None,
) -> dict[str, Any]:
    """Segment generated images and score them against the labels they were generated from.

    Args:
        images: folder of generated images (``images/`` inside it if present), or any dataset
            spec (its images); names mirror the label names, optionally with an ``_sNN`` sample suffix.
        labels: dataset spec of the label maps (in the segmenter's label space).
        segmenter: a segmenter checkpoint.
        size: working size ``(H, W)``; default the segmenter's training size.
        label_space: the raw label values of a plain ``labels`` folder (``gta5``, ``synthia``, ...,
            ``trainid``; see :data:`s2rcli.data.label_formats.LABEL_FORMATS`), converted into the segmenter's space.
    """
    generated = open_images(images)
    model, ckpt, space = load_segmenter(segmenter, device)
    label_set = open_with_label_format(labels, space.name, label_space)
    if not label_set.has_labels:
        raise S2RError(f"{labels} has no labels", hint="pass the labelled spec the images were generated from, "
                                                       "or a folder of label files with --label-space")
    pairs, unmatched = match_generated(generated.names, label_set.names)
    if not pairs:
        example = generated.names[0]
        raise S2RError(
            f"no generated image in {images} matches a label of {labels} by name (e.g. {example!r})",
            hint="generated files must be named like the labels (optionally with an _sNN suffix)",
        )
    if unmatched:
        warn(f"{len(unmatched)} generated image(s) have no label and are not scored (e.g. {unmatched[0]!r})")
    work_size = size or checkpoint_size(ckpt)
    cm = evaluate_pairs(
        model, [(generated, i, label_set, j) for i, j in pairs], num_classes=space.num_classes, size=work_size,
        batch_size=batch_size, device=device, description="scoring",
    )
    scores = cm.scores(space.class_names, default_subsets(space.name))
    return {
        "images": images,
        "labels": labels,
        "segmenter": str(segmenter),
        "segmenter_model": ckpt.get("model"),
        "label_space": space.name,
        "labels_read_as": label_space,
        "size": list(work_size) if work_size else None,
        "scored": len(pairs),
        "unmatched": len(unmatched),
        "label_maps": len({j for _, j in pairs}),
        "scores": scores.to_dict(),
    }


# --- test an existing segmenter ---------------------------------------------------------------


def evaluate_segmenter(
    segmenter: str | Path,
    test_spec: str,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    save_predictions: str | Path | None = None,
) -> dict[str, Any]:
    """Test a segmenter checkpoint on a labelled set: ``s2r segment-eval test``.

    The scores are those of train-and-test (:func:`evaluate_dataset`): mIoU over the
    classes present (in the labels or the predictions), per-class IoU (``None`` for a
    class that is neither), accuracies. ``save_predictions``: a folder that receives one
    trainId PNG per test image, at its label's resolution, named like the image
    (``DIR/<name>.png``, subfolders mirrored).

    >>> evaluate_segmenter("runs/adapt", "demo:demo?split=real_val")["scores"]["miou"]
    """
    model, ckpt, space = load_segmenter(segmenter, device)
    test_set = open_dataset(test_spec, space.name)
    if not test_set.has_labels:
        raise S2RError(f"test set {test_spec} has no labels", hint="pass a labelled split, e.g. demo:DIR?split=real_val")
    work_size = size or checkpoint_size(ckpt)
    cm = evaluate_dataset(model, test_set, num_classes=space.num_classes, size=work_size, batch_size=batch_size,
                          device=device)
    if save_predictions is not None:
        write_predictions(model, test_set, Path(save_predictions), size=work_size, device=device)
    scores = cm.scores(space.class_names, default_subsets(space.name)).to_dict()
    return {
        "segmenter": str(segmenter),
        "segmenter_model": ckpt.get("model"),
        "test": test_spec,
        "test_images": len(test_set),
        "label_space": space.name,
        "size": list(work_size) if work_size else None,
        "classes_present": sum(v is not None for v in scores["per_class_iou"].values()),
        "predictions": str(save_predictions) if save_predictions is not None else None,
        "scores": scores,
    }


@torch.no_grad()
def write_predictions(model: torch.nn.Module, dataset: Any, folder: Path, *, size: tuple[int, int] | None,
                      device: torch.device | str = "cpu") -> list[Path]:
    """One trainId PNG per image of ``dataset`` (uint8; ``folder/<name>.png``), at the label's
    resolution when it has labels, else the image's; the argmax of bilinearly resized logits.
    As in scoring, only the window the cover-and-centre-crop kept is predicted; the band outside
    it (a 4:3 frame at a 2:1 size) is 255, ignore."""
    model.eval()
    written = []
    for i in track(range(len(dataset)), total=len(dataset), description=f"writing predictions to {folder}"):
        image = dataset.read_image(i)
        target = dataset.read_label(i).shape[:2] if dataset.has_labels else image.shape[:2]
        logits = model(_prepare(image, size)[None].to(device)).float()
        rows, cols = _label_window(image.shape[:2], size, target)
        prediction = np.full(tuple(target), 255, np.uint8)
        prediction[rows, cols] = _to_window(logits, rows, cols).argmax(1)[0].to(torch.uint8).cpu().numpy()
        written.append(data_io.write_png(prediction, folder / f"{dataset.names[i]}.png"))
    return written


# --- train and test ---------------------------------------------------------------------------


def split_specs(values: Sequence[str] | str) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (``--train`` takes comma lists and repeats)."""
    if isinstance(values, str):
        values = [values]
    specs = [part.strip() for value in values for part in value.split(",")]
    return [s for s in specs if s]


def train_and_test(
    train_specs: Sequence[str],
    test_spec: str,
    model: str,
    out: str | Path,
    *,
    preset: str = "tiny",
    steps: int | None = None,
    size: tuple[int, int] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    lr: float | None = None,
    workers: int | None = None,
    backbone_weights: str | None = None,
    label_space: str = "cityscapes19",
    config_file: str | None = None,
    sets: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train segmenter ``model`` on the union of ``train_specs`` with the training engine
    (:func:`s2rcli.training.runner.train_run`), then test it on ``test_spec``.

    The run folder is an ordinary run: ``config.json`` (before step 0),
    ``checkpoints/latest.pt``, ``metrics.jsonl``, ``losses.png``, and here also
    ``results.json``. ``resume`` continues a stopped run exactly; ``config_file``
    and ``sets`` work as for ``s2r train``. Returns the results dict (its
    ``scores`` hold mIoU, accuracies and per-class IoU).
    """
    get_model_entry(model, kind="segmenter")  # one line naming the valid segmenters
    out = Path(out)
    specs = split_specs(train_specs)
    if not specs:
        raise S2RError("no training set given", hint="pass --train SPEC[,SPEC...]")
    test_set = open_dataset(test_spec, label_space)
    if not test_set.has_labels:
        raise S2RError(f"test set {test_spec} has no labels", hint="pass a labelled split, e.g. demo:DIR?split=real_val")
    options = {
        "data.train": specs, "data.size": list(size) if size else None, "seed": seed, "label_space": label_space,
        "train.steps": steps, "train.batch_size": batch_size, "train.lr": lr, "train.workers": workers,
        "train.backbone_weights": backbone_weights,
    }
    t0 = time.perf_counter()
    state = train_run(model, out, preset=preset, config_file=config_file, sets=sets, options=options, resume=resume,
                      overwrite=overwrite, device=torch.device(device))
    train_seconds = time.perf_counter() - t0
    checkpoint = out / "checkpoints" / "latest.pt"
    if state.status != "completed":
        raise S2RError(f"training stopped at step {state.step} ({state.status}); nothing was tested",
                       hint=f"continue it with --resume (the checkpoint is {checkpoint})")
    cfg = state.config
    net = state.task.nets["S"]
    size_hw = (int(cfg["data"]["size"][0]), int(cfg["data"]["size"][1]))
    cm = evaluate_dataset(net, test_set, num_classes=net.num_classes, size=size_hw,
                          batch_size=max(1, int(cfg["train"]["batch_size"])), device=device)
    space_name = cfg["label_space"]
    scores = cm.scores(get_label_space(space_name).class_names, default_subsets(space_name))
    results = {
        "model": cfg["model"],
        "preset": cfg["preset"],
        "train": specs,
        "train_images": len(state.task.data),
        "test": test_spec,
        "test_images": len(test_set),
        "steps": state.step,
        "seed": cfg["seed"],
        "size": cfg["data"]["size"],
        "label_space": space_name,
        "train_seconds": round(train_seconds, 2),
        "checkpoint": str(checkpoint),
        "scores": scores.to_dict(),
    }
    atomic_write_json(out / "results.json", results, overwrite=True)
    return results


# --- presentation -----------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def scores_table(scores: dict[str, Any], title: str):
    """A rich table: the summary metrics, then per-class IoU (%), in the style of Tables 1-3 of the UNIT + smart batch paper."""
    table = Table(title=title)
    table.add_column("class / metric")
    table.add_column("IoU %", justify="right")
    table.add_column("acc %", justify="right")
    for name, iou in scores["per_class_iou"].items():
        table.add_row(name, _pct(iou), _pct(scores["per_class_accuracy"].get(name)))
    table.add_section()
    table.add_row("[bold]mIoU[/bold]", f"[bold]{_pct(scores['miou'])}[/bold]", "")
    for key, value in scores.get("subsets", {}).items():
        table.add_row(key.replace("miou", "mIoU"), _pct(value), "")
    table.add_row("pixel accuracy", "", _pct(scores["pixel_accuracy"]))
    table.add_row("mean class accuracy", "", _pct(scores["mean_class_accuracy"]))
    return table
