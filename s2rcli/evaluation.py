"""The functions behind ``s2r segment-eval``: score generated images with a
segmenter, and train a segmenter on some sets and test it on another.

Both report the metrics of :mod:`s2rcli.metrics.segmentation`. Predictions are
made at a working size (the segmenter's training size by default) and the
logits are resized bilinearly to each label map's own resolution before the
argmax, so every labelled pixel counts once, at full resolution.

>>> from s2rcli.evaluation import train_and_test
>>> results = train_and_test(["demo:w?split=synthetic"], "demo:w?split=real_val", "fastseg", "runs/seg", steps=600)
>>> results["scores"]["miou"]
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .console import info, warn
from .errors import S2RError
from .metrics.segmentation import ConfusionMatrix, default_subsets

SAMPLE_SUFFIX = re.compile(r"^(?P<base>.+)_s\d+$")
"""Label-to-image outputs may hold several samples per label map: ``name_s00``, ``name_s01``, ..."""


# --- segmenters from checkpoints ---------------------------------------------------------


def load_segmenter(path: str | Path, device: torch.device | str = "cpu"):
    """``(model, checkpoint, label_space)`` for a segmenter checkpoint; refuses other models."""
    from .data.labels import get_label_space
    from .models import get_model_entry
    from .training.checkpoint import load_checkpoint, model_from_checkpoint

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


# --- evaluation -----------------------------------------------------------------------------


def _prepare(image: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    from .data.torchdata import image_to_tensor, resize_image

    if size is not None:
        image = resize_image(np.ascontiguousarray(image[..., :3]), size)
    return image_to_tensor(np.ascontiguousarray(image[..., :3]))


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

    Images are resized to ``size`` (``None``: their own size, one at a time);
    logits are brought to each label's resolution before the argmax.
    """
    from .training.progress import track

    device = torch.device(device)
    cm = ConfusionMatrix(num_classes)
    step = max(1, int(batch_size)) if size is not None else 1
    starts = range(0, len(pairs), step)
    model.eval()
    for start in track(starts, total=len(starts), description=description):
        chunk = pairs[start:start + step]
        images = torch.stack([_prepare(img_set.read_image(i), size) for img_set, i, _, _ in chunk]).to(device)
        logits = model(images).float()
        for k, (_, _, lab_set, j) in enumerate(chunk):
            label = lab_set.read_label(j)
            out = logits[k:k + 1]
            if tuple(out.shape[-2:]) != label.shape:
                out = F.interpolate(out, size=label.shape, mode="bilinear", align_corners=False)
            cm.update(out.argmax(1)[0].cpu().numpy(), label)
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
) -> dict[str, Any]:
    """Segment generated images and score them against the labels they were generated from.

    Args:
        images: folder of generated images (``images/`` inside it if present); names
            mirror the label names, optionally with an ``_sNN`` sample suffix.
        labels: dataset spec of the label maps (in the segmenter's label space).
        segmenter: a segmenter checkpoint.
        size: working size ``(H, W)``; default the segmenter's training size.
    """
    from .data.datasets import open_dataset
    from .metrics.fid import open_image_set

    generated = open_image_set(images)
    model, ckpt, space = load_segmenter(segmenter, device)
    label_set = open_dataset(labels, space.name)
    if not label_set.has_labels:
        raise S2RError(f"{labels} has no labels", hint="pass the labelled spec the images were generated from")
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
        "size": list(work_size) if work_size else None,
        "scored": len(pairs),
        "unmatched": len(unmatched),
        "label_maps": len({j for _, j in pairs}),
        "scores": scores.to_dict(),
    }


# --- train and test ---------------------------------------------------------------------------


def split_specs(values: Sequence[str] | str) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (``--train`` takes comma lists and repeats)."""
    if isinstance(values, str):
        values = [values]
    specs = [part.strip() for value in values for part in value.split(",")]
    return [s for s in specs if s]


def resolve_train_config(
    model: str,
    train_specs: Sequence[str],
    test_spec: str,
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
) -> dict[str, Any]:
    """The resolved config written to ``RUN/config.json``: preset defaults < explicit options."""
    from .data.labels import get_label_space
    from .models import get_model_entry

    entry = get_model_entry(model, kind="segmenter")
    train = copy.deepcopy(entry.preset(preset).get("train", {}))
    for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr), ("workers", workers),
                       ("backbone_weights", backbone_weights)):
        if value is not None:
            train[key] = value
    space = get_label_space(label_space)
    preset_size = train.pop("size", [64, 128])  # the size lives in cfg["data"]
    work_size = [int(v) for v in (size or preset_size)]
    if int(train.get("steps", 0)) < 1:
        raise S2RError("--steps must be at least 1")
    return {
        "model": entry.name,
        "preset": preset,
        "model_kwargs": entry.model_kwargs(preset, num_classes=space.num_classes),
        "seed": int(seed),
        "label_space": space.name,
        "data": {"train": list(train_specs), "test": test_spec, "size": work_size},
        "train": train,
    }


def _refuse_existing_run(out: Path, overwrite: bool) -> None:
    taken = [p for p in ("config.json", "checkpoints", "results.json") if (out / p).exists()]
    if taken and not overwrite:
        raise S2RError(f"run folder {out} already holds a run ({', '.join(taken)})",
                       hint="choose another --out, or pass --overwrite to replace it")


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
    overwrite: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train segmenter ``model`` on the union of ``train_specs``, then test it on ``test_spec``.

    Writes ``out/config.json`` (before step 0), ``out/checkpoints/latest.pt``,
    ``out/metrics.jsonl`` and ``out/results.json``; returns the results dict
    (its ``scores`` hold mIoU, accuracies and per-class IoU).
    """
    from .data.datasets import open_dataset
    from .models import create_model
    from .training.distributed import DistInfo
    from .training.loop import seed_everything, train
    from .training.observers import CheckpointObserver
    from .training.progress import ProgressObserver
    from .training.stats import MetricsObserver, write_config
    from .utils.atomic import atomic_write_json

    out = Path(out)
    device = torch.device(device)
    specs = split_specs(train_specs)
    if not specs:
        raise S2RError("no training set given", hint="pass --train SPEC[,SPEC...]")
    cfg = resolve_train_config(model, specs, test_spec, preset=preset, steps=steps, size=size, batch_size=batch_size,
                               seed=seed, lr=lr, workers=workers, backbone_weights=backbone_weights,
                               label_space=label_space)
    _refuse_existing_run(out, overwrite)
    train_sets = [open_dataset(spec, cfg["label_space"]) for spec in specs]
    for spec, ds in zip(specs, train_sets):
        if not ds.has_labels:
            raise S2RError(f"training set {spec} has no labels", hint="segmenters train on images with label maps")
    test_set = open_dataset(test_spec, cfg["label_space"])
    if not test_set.has_labels:
        raise S2RError(f"test set {test_spec} has no labels", hint="pass a labelled split, e.g. demo:DIR?split=real_val")

    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg, overwrite=True)
    seed_everything(cfg["seed"])  # the network's initialisation depends on the seed alone
    net = create_model(cfg["model"], **cfg["model_kwargs"])
    task = net.make_task(cfg, {"train": train_sets}, DistInfo(), device)
    tcfg = cfg["train"]
    checkpoints = CheckpointObserver(out, every=int(tcfg.get("checkpoint_every", 1000)))
    observers = [ProgressObserver(), MetricsObserver(out, every=int(tcfg.get("log_every", 10))), checkpoints]
    info(f"training {cfg['model']} ({cfg['preset']}) on {sum(len(d) for d in train_sets)} images "
         f"from {len(specs)} set(s) for {tcfg['steps']} steps at {cfg['data']['size'][0]}x{cfg['data']['size'][1]}")
    t0 = time.perf_counter()
    state = train(task, steps=int(tcfg["steps"]), device=device, config=cfg, run_dir=out, seed=cfg["seed"],
                  accumulate=int(tcfg.get("accumulate", 1)), amp=tcfg.get("amp"), observers=observers)
    train_seconds = time.perf_counter() - t0
    if state.status != "completed":
        raise S2RError(f"training stopped at step {state.step} ({state.status}); nothing was tested",
                       hint=f"the checkpoint is {checkpoints.latest}")

    size_hw = (int(cfg["data"]["size"][0]), int(cfg["data"]["size"][1]))
    cm = evaluate_dataset(net, test_set, num_classes=net.num_classes, size=size_hw,
                          batch_size=max(1, int(tcfg["batch_size"])), device=device)
    space_name = cfg["label_space"]
    from .data.labels import get_label_space

    scores = cm.scores(get_label_space(space_name).class_names, default_subsets(space_name))
    results = {
        "model": cfg["model"],
        "preset": cfg["preset"],
        "train": specs,
        "train_images": sum(len(d) for d in train_sets),
        "test": test_spec,
        "test_images": len(test_set),
        "steps": state.step,
        "seed": cfg["seed"],
        "size": cfg["data"]["size"],
        "label_space": space_name,
        "train_seconds": round(train_seconds, 2),
        "checkpoint": str(checkpoints.latest),
        "scores": scores.to_dict(),
    }
    atomic_write_json(out / "results.json", results)
    return results


# --- presentation -----------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def scores_table(scores: dict[str, Any], title: str):
    """A rich table: the summary metrics, then per-class IoU (%), paper 001 Tables 1-3 style."""
    from rich.table import Table

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
