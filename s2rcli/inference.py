"""Run a trained checkpoint over a dataset: ``s2r translate`` as importable functions.

Image models (``input_kind="image"``, e.g. UNIT) translate each image at any
size: it is reflect-padded to the model's stride and cropped back. Images
larger than ``tile`` are processed in overlapping tiles blended with linear
ramps, so memory stays bounded. Label models (``input_kind="label"``) generate
``samples`` images per label map, each from a generator seeded by
``(seed, index, sample)``.

Outputs mirror the input names, always as PNG::

    OUT/images/<name>.png          (label models with samples > 1: <name>_sNN.png)
    OUT/labels/<name>.png          when the input has labels (one per output image, <name>_sNN.png too),
                                   so OUT is a valid folder: dataset for segmentation training
    OUT/manifest.json              checkpoint, direction, counts, label space ("space")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from . import __version__
from .checkpoint import load_checkpoint
from .console import info, track
from .data import io
from .data.datasets import open_dataset
from .data.io import write_png
from .data.torchdata import image_to_tensor, resize_image, resize_label, tensor_to_image
from .errors import S2RError
from .models import get_model_entry, model_from_checkpoint
from .utils.atomic import atomic_write_json

DEFAULT_TILE = 1024
DIRECTIONS = ("a2b", "b2a")  # domain a = synthetic, b = real


# --- padding and tiling -------------------------------------------------------------------------


def pad_to_multiple(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` (BxCxHxW) on the bottom/right to multiples of ``stride``; returns the original (H, W).

    Reflect padding avoids a dark frame; it falls back to replicate where the
    image is too small to reflect.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def run_padded(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, stride: int) -> torch.Tensor:
    padded, (h, w) = pad_to_multiple(x, stride)
    return fn(padded)[..., :h, :w]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1 inside the tile, rising linearly over ``overlap`` pixels at edges that meet another tile."""
    w = torch.ones(length)
    if overlap > 0:
        r = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], r.flip(0))
    return w


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, stride: int, tile: int,
              overlap: int | None = None) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile`` x ``tile`` windows of ``x`` (1xCxHxW) and blend them.

    Each window's output is weighted by ramps that fall to ~0 at edges shared
    with a neighbour, so seams fade instead of showing. Only one window is on
    the model's device at a time; the blended result is accumulated on ``x``'s device.
    """
    tile = max(stride * 2, tile - tile % stride)
    if overlap is None:
        overlap = tile // 4
    overlap = max(stride, overlap - overlap % stride)
    padded, (h, w) = pad_to_multiple(x, stride)
    H, W = padded.shape[-2:]
    if H <= tile and W <= tile:
        return fn(padded)[..., :h, :w]
    ys, xs = _starts(H, tile, overlap), _starts(W, tile, overlap)
    out = weight = None
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, H), min(tile, W)
            y = fn(padded[..., y0:y0 + th, x0:x0 + tw]).to(x.device, torch.float32)
            wy = _ramp(th, overlap, y0 == 0, y0 + th >= H)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= W)
            wt = (wy[:, None] * wx[None, :]).to(x.device)
            if out is None:
                out = torch.zeros(y.shape[0], y.shape[1], H, W, device=x.device)
                weight = torch.zeros(H, W, device=x.device)
            out[..., y0:y0 + th, x0:x0 + tw] += y * wt
            weight[y0:y0 + th, x0:x0 + tw] += wt
    return (out / weight)[..., :h, :w]


# --- input handling -----------------------------------------------------------------------------


@dataclass
class Inputs:
    """What ``translate`` iterates: names, and readers for images and labels."""

    names: list[str]
    read_image: Callable[[int], np.ndarray] | None
    read_label: Callable[[int], np.ndarray] | None
    space: str | None
    description: str


def _looks_like_label_file(path: Path) -> bool:
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I;16", "I"):
            return False
        values = np.unique(np.asarray(im))
    return len(values) <= 64 and bool(np.all((values < 64) | (values == 255)))


def open_inputs(spec: str, space: str | None, input_kind: str) -> Inputs:
    """Open ``--input`` for a model of ``input_kind``; refuse the wrong kind of data in one line."""
    ds = open_dataset(spec, space=space or "cityscapes19")
    first_image = ds.samples[0].image if ds.samples else None
    label_like = first_image is not None and not ds.has_labels and _looks_like_label_file(Path(first_image))
    if input_kind == "image":
        if label_like:
            raise S2RError(f"{spec} holds label maps, but this checkpoint translates images",
                           hint="pass a folder or spec of RGB images")
        return Inputs(ds.names, ds.read_image, ds.read_label if ds.has_labels else None,
                      ds.space.name if ds.has_labels else None, spec)
    if ds.has_labels:
        return Inputs(ds.names, None, ds.read_label, ds.space.name, spec)
    if label_like:
        paths = [Path(s.image) for s in ds.samples]
        return Inputs(ds.names, None, lambda i: io.read_index_label(paths[i]).astype(np.uint8), space, spec)
    raise S2RError(f"{spec} has images but no label maps, and this checkpoint generates images from labels",
                   hint="pass a dataset spec with labels, or a folder of label PNGs in the checkpoint's label space")


# --- the command ----------------------------------------------------------------------------------


def _generator_seed(seed: int, index: int, sample: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index), int(sample)]).generate_state(1, np.uint64)[0] >> 1)


def _image_out_names(name: str, samples: int) -> list[str]:
    return [f"{name}.png"] if samples == 1 else [f"{name}_s{s:02d}.png" for s in range(samples)]


def _batches(indices: list[int], sizes: list[tuple[int, int]], batch_size: int) -> Iterator[list[int]]:
    """Consecutive indices of equal size, at most ``batch_size`` at a time."""
    batch: list[int] = []
    for i in indices:
        if batch and (len(batch) == batch_size or sizes[i] != sizes[batch[0]]):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def translate_dataset(
    checkpoint: str | Path,
    input_spec: str,
    output: str | Path,
    *,
    direction: str = "a2b",
    batch_size: int = 1,
    size: tuple[int, int] | None = None,
    tile: int = DEFAULT_TILE,
    samples: int = 1,
    seed: int = 0,
    use_ema: bool = True,
    overwrite: bool = False,
    skip_existing: bool = False,
    device: torch.device | None = None,
) -> dict:
    """Translate (image models) or generate from (label models) every item of ``input_spec``.

    Returns the manifest, also written to ``OUTPUT/manifest.json``.
    """
    if overwrite and skip_existing:
        raise S2RError("--overwrite and --skip-existing contradict each other", hint="pick one")
    if batch_size < 1 or samples < 1 or tile < 0:
        raise S2RError("--batch-size and --samples must be >= 1, --tile >= 0")
    device = device or torch.device("cpu")
    ckpt = load_checkpoint(checkpoint)
    entry = get_model_entry(ckpt["model"])
    if entry.kind != "translation":
        raise S2RError(f"{checkpoint} is a {entry.kind} ({ckpt['model']}), not a translation model",
                       hint="use `s2r segment-eval` for segmenters")
    model, _ = model_from_checkpoint(ckpt, prefer_ema=use_ema)
    model.to(device).eval()
    has_ema = any(k.endswith("_ema") for k in ckpt["state_dicts"])
    is_label = entry.input_kind == "label"
    if not is_label and samples != 1:
        raise S2RError(f"--samples {samples}: {ckpt['model']} translates deterministically",
                       hint="--samples applies to label-to-image models")
    stride = int(getattr(model, "stride", 1))
    inputs = open_inputs(input_spec, ckpt.get("label_space"), entry.input_kind)

    output = Path(output)
    out_names = {i: _image_out_names(n, samples) for i, n in enumerate(inputs.names)}
    targets = [output / "images" / f for i in out_names for f in out_names[i]]
    existing = sum(p.exists() for p in targets)
    if existing and not (overwrite or skip_existing):
        raise S2RError(f"{existing} of {len(targets)} outputs already exist in {output}",
                       hint="pass --overwrite to replace them, or --skip-existing to keep them and do the rest")
    todo = [i for i in range(len(inputs.names))
            if not (skip_existing and all((output / "images" / f).exists() for f in out_names[i]))]

    if is_label:
        direction_note, read = None, inputs.read_label
    else:
        if direction not in DIRECTIONS:
            raise S2RError(f"unknown direction {direction!r}", hint="use a2b (synthetic -> real) or b2a (real -> synthetic)")
        direction_note, read = direction, inputs.read_image

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        x = read(i)
        label = inputs.read_label(i) if inputs.read_label is not None else None
        if size is not None:
            x = resize_label(x, size) if is_label else resize_image(x, size)
            label = resize_label(label, size) if label is not None else None
        return x, label

    written = 0
    with torch.inference_mode():
        pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []

        def flush() -> None:
            nonlocal written
            if not pending:
                return
            if is_label:
                outs = [[_generate(model, x, stride, device, seed, i, s) for s in range(samples)] for i, x, _ in pending]
            else:
                batch = torch.stack([image_to_tensor(x) for _, x, _ in pending]).to(device)
                fn = lambda t: model.translate(t, direction)  # noqa: E731
                h, w = batch.shape[-2:]
                if tile and max(h, w) > tile:
                    y = torch.cat([run_tiled(fn, batch[j:j + 1], stride, tile) for j in range(batch.shape[0])])
                else:
                    y = run_padded(fn, batch, stride)
                outs = [[y[j]] for j in range(y.shape[0])]
            for (i, _, label), images in zip(pending, outs):
                for fname, img in zip(out_names[i], images):
                    write_png(tensor_to_image(img), output / "images" / fname)
                    written += 1
                if label is not None:  # one label per output image, so OUT stays a valid folder: dataset
                    for fname in out_names[i]:
                        write_png(label.astype(np.uint8), output / "labels" / fname)
            pending.clear()

        for i in track(todo, total=len(todo), description="generate" if is_label else "translate"):
            x, label = load(i)
            if pending and (len(pending) == batch_size or x.shape != pending[0][1].shape):
                flush()
            pending.append((i, x, label))
        flush()

    manifest = {
        "checkpoint": str(checkpoint), "model": ckpt["model"], "step": ckpt.get("step"), "input": input_spec,
        "input_kind": entry.input_kind, "direction": direction_note, "ema": bool(use_ema and has_ema),
        "images": written, "skipped": len(inputs.names) - len(todo), "inputs": len(inputs.names),
        "samples": samples, "seed": seed, "size": list(size) if size else None, "tile": tile,
        "labels": inputs.read_label is not None, "space": inputs.space, "s2r_version": __version__,
    }
    atomic_write_json(output / "manifest.json", manifest)
    info(f"wrote {written} image(s) to {output / 'images'}" + (f" (skipped {manifest['skipped']})" if manifest["skipped"] else ""))
    return manifest


def _generate(model, label: np.ndarray, stride: int, device: torch.device, seed: int, index: int,
              sample: int) -> torch.Tensor:
    """One image from one label map; the noise comes from a generator seeded by (seed, index, sample)."""
    h, w = label.shape
    ph, pw = (-h) % stride, (-w) % stride
    padded = np.pad(label, ((0, ph), (0, pw)), mode="symmetric") if ph or pw else label
    labels = torch.from_numpy(np.array(padded, dtype=np.int64))[None].to(device)
    generator = torch.Generator(device=device).manual_seed(_generator_seed(seed, index, sample))
    return model.generate(labels, generator=generator)[0, :, :h, :w]
