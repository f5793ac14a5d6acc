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
    OUT/manifest.json              checkpoint, direction, counts, label space ("space"), and what
                                   ``--skip-existing`` checks (below)
    OUT/.s2r.lock                  while a run writes into OUT (a second run is refused)

The manifest (``"kind": "s2r translate"``) lists every output image it vouches for
(``outputs``, old and new after a ``--skip-existing`` run) and what made them: the
checkpoint's content hash (``checkpoint_sha256``: a copied or moved checkpoint is still the
same one, a retrained ``latest.pt`` is not), the input spec with an absolute path
(``input_spec``), and the settings that change pixels (``settings``: size, EMA, label space,
and direction and tile for image models or samples and seed for label models; a tile only
counts when some image was larger than it). ``--skip-existing`` keeps an output only when all
three match and the output is listed; otherwise it refuses. The manifest is written before the
first output and brought up to date as the run goes (``status``: ``incomplete`` until the end,
then ``complete``), so an interrupted or failed run leaves a truthful record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from . import __version__
from .checkpoint import load_checkpoint
from .console import info, progress_bar, warn
from .data import io
from .data.datasets import Spec, parse_spec
from .data.io import write_png
from .data.label_formats import (  # noqa: F401 (LabelFormat, label_space_help: re-exported for callers)
    LABEL_FORMATS, LabelFormat, label_format, label_space_help, open_with_label_format,
)
from .data.labels import get_label_space
from .data.torchdata import image_to_tensor, resize_image, resize_label, tensor_to_image
from .errors import S2RError
from .models import get_model_entry, model_from_checkpoint
from .utils.atomic import atomic_write_json, folder_lock, writing

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


def tile_grid(height: int, width: int, stride: int, tile: int,
              overlap: int | None = None) -> tuple[int, int, list[int], list[int]]:
    """``(tile, overlap, row starts, column starts)`` that :func:`run_tiled` uses on an image of
    ``height x width``: ``tile`` rounded down to the stride (at least two strides), ``overlap``
    a quarter tile by default, and the starts on the image padded to the stride."""
    tile = max(stride * 2, tile - tile % stride)
    if overlap is None:
        overlap = tile // 4
    overlap = max(stride, overlap - overlap % stride)
    H, W = height + (-height) % stride, width + (-width) % stride
    if H <= tile and W <= tile:
        return tile, overlap, [0], [0]
    return tile, overlap, _starts(H, tile, overlap), _starts(W, tile, overlap)


def tile_count(height: int, width: int, stride: int, tile: int, overlap: int | None = None) -> int:
    """How many tiles :func:`run_tiled` cuts an image into (1: it runs whole); 1 with ``tile=0``."""
    if not tile:
        return 1
    _, _, ys, xs = tile_grid(height, width, stride, tile, overlap)
    return len(ys) * len(xs)


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, stride: int, tile: int,
              overlap: int | None = None, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile`` x ``tile`` windows of ``x`` (1xCxHxW) and blend them.

    Each window's output is weighted by ramps that fall to ~0 at edges shared
    with a neighbour, so seams fade instead of showing. Only one window is on
    the model's device at a time; the blended result is accumulated on ``x``'s device.
    ``on_tile(done, total)`` is called after each window (progress).

    The result equals the untiled one only for a model whose receptive field fits in the
    overlap and which has no image-wide statistics: a network with instance normalisation
    (UNIT's) normalises each tile by its own statistics, so tiled output differs from untiled
    by a few grey levels (docs/evaluation.md, "Tiled translation").
    """
    tile, overlap, ys, xs = tile_grid(x.shape[-2], x.shape[-1], stride, tile, overlap)
    padded, (h, w) = pad_to_multiple(x, stride)
    H, W = padded.shape[-2:]
    if len(ys) == 1 and len(xs) == 1:
        out = fn(padded)[..., :h, :w]
        if on_tile is not None:
            on_tile(1, 1)
        return out
    out = weight = None
    total, done = len(ys) * len(xs), 0
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
            done += 1
            if on_tile is not None:
                on_tile(done, total)
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
    skip_unreadable: bool = False
    """The spec says ``on_error=skip``: an input that cannot be read is left out, named, and counted."""
    left_out: list[str] = field(default_factory=list)
    """Names the dataset already left out as unreadable when it was opened (``on_error=skip``)."""


def _looks_like_label_file(path: Path) -> bool:
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I;16", "I"):
            return False
        values = np.unique(np.asarray(im))
    return len(values) <= 64 and bool(np.all((values < 64) | (values == 255)))


def _first_looks_like_label_file(paths: list, tries: int = 8) -> bool:
    """Whether the first of ``paths`` that opens is a label map; an empty or broken file is passed
    over here (reading it later fails naming it, or leaves it out under ``on_error=skip``)."""
    for path in [p for p in paths if p is not None][:tries]:
        try:
            return _looks_like_label_file(Path(path))
        except (OSError, SyntaxError, ValueError):
            continue
    return False


def _read_label_in_space(path: Path, space: str) -> np.ndarray:
    """A label PNG whose values must already be ids of ``space``; raw dataset ids are refused with a hint."""
    label = io.read_index_label(path)
    n = get_label_space(space).num_classes
    bad = np.unique(label[(label >= n) & (label != 255)])
    if bad.size:
        listed = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
        raise S2RError(f"label map {path} has values {listed} outside 0..{n - 1} (255 = ignore) of the model's "
                       f"label space {space}",
                       hint="if these are a dataset's raw ids, pass --label-space with its kind: "
                            + ", ".join(LABEL_FORMATS))
    return label.astype(np.uint8)


def open_inputs(spec: str, space: str | None, input_kind: str, label_space: str | None = None) -> Inputs:
    """Open ``--input`` for a model of ``input_kind``; refuse the wrong kind of data in one line.

    ``label_space`` (``--label-space``) names the raw label values of a plain folder (see
    :data:`LABEL_FORMATS`); they are converted into ``space``, the model's label space.
    """
    target = space or "cityscapes19"
    ds = open_with_label_format(spec, target, label_space)
    on_error = {"skip_unreadable": ds.on_error == "skip", "left_out": list(getattr(ds, "skipped_unreadable", []))}
    if label_space is not None:
        if input_kind == "image" and any(s.image is None for s in ds.samples):
            raise S2RError(f"{spec} holds label maps, but this checkpoint translates images",
                           hint="pass a folder with images/ (and labels/), or drop --label-space")
        return Inputs(ds.names, ds.read_image if input_kind == "image" else None, ds.read_label, ds.space.name, spec,
                      **on_error)
    label_like = not ds.has_labels and _first_looks_like_label_file([s.image for s in ds.samples])
    if input_kind == "image":
        if label_like:
            raise S2RError(f"{spec} holds label maps, but this checkpoint translates images",
                           hint="pass a folder or spec of RGB images")
        return Inputs(ds.names, ds.read_image, ds.read_label if ds.has_labels else None,
                      ds.space.name if ds.has_labels else None, spec, **on_error)
    if ds.has_labels:
        return Inputs(ds.names, None, ds.read_label, ds.space.name, spec, **on_error)
    if label_like:
        paths = [Path(s.image) for s in ds.samples]
        return Inputs(ds.names, None, lambda i: _read_label_in_space(paths[i], target), space, spec, **on_error)
    raise S2RError(f"{spec} has images but no label maps, and this checkpoint generates images from labels",
                   hint="pass a dataset spec with labels, or a folder of label PNGs (--label-space names their "
                        "raw ids: " + ", ".join(LABEL_FORMATS) + ")")


# --- the output folder and its manifest -------------------------------------------------------------

MANIFEST_KIND = "s2r translate"
MANIFEST_EVERY_S = 5.0
"""How often (seconds) the manifest is brought up to date during a run, so a killed run leaves a record."""


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


def checkpoint_file(checkpoint: str | Path) -> Path:
    """The file behind ``--checkpoint`` (a run folder means its ``checkpoints/latest.pt``)."""
    path = Path(checkpoint)
    return path / "checkpoints" / "latest.pt" if path.is_dir() else path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_spec(spec: str) -> str:
    """``spec`` with an absolute path, so the same input reads the same from any working folder."""
    parsed = parse_spec(spec)
    return str(Spec(parsed.kind, parsed.path.resolve(), parsed.options))


def is_translate_manifest(data: object) -> bool:
    """A manifest written by ``translate`` (this version's ``kind``, or an older one's fields)."""
    if not isinstance(data, dict):
        return False
    return data.get("kind") == MANIFEST_KIND or (data.get("kind") is None and
                                                 {"checkpoint", "input_kind", "direction"} <= data.keys())


def read_translate_manifest(output: Path) -> dict | None:
    """``OUTPUT/manifest.json`` if it is a translate manifest, None if there is none; refuses any other."""
    path = output / "manifest.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise S2RError(f"{path} exists but cannot be read as JSON ({exc}); translate would replace it",
                       hint="choose another --output (translate writes OUTPUT/manifest.json), or remove that file "
                            "if it is not needed") from None
    if not is_translate_manifest(data):
        raise S2RError(f"--output {output} holds a manifest.json that translate did not write (a dataset root?); "
                       f"translate would replace it",
                       hint="choose another --output folder, e.g. a new folder next to it")
    return data


def _refuse_unsafe_output(output: Path, input_spec: str, overwrite: bool) -> None:
    """``--overwrite`` into, inside or around the input folder could replace the sources."""
    if not overwrite:
        return
    source = parse_spec(input_spec).path.resolve()
    out = output.resolve()
    if out == source or out.is_relative_to(source) or source.is_relative_to(out):
        where = "is" if out == source else ("is inside" if out.is_relative_to(source) else "contains")
        raise S2RError(f"--output {output} {where} the input folder {source}; with --overwrite, translate could "
                       f"replace source images, labels or the dataset's manifest.json",
                       hint="choose an --output folder outside the input")


def _effective_tile(tile: int | None, max_side: int | None) -> int | None:
    """The tile that mattered: 0 when no image was larger than it (or tiling was off)."""
    if not tile or (max_side is not None and max_side <= tile):
        return 0
    return tile


def _identity_diff(previous: dict, current: dict) -> list[str]:
    """How the run recorded in ``previous`` differs from ``current`` in what decides the pixels."""
    diffs = []
    old_sha, new_sha = previous.get("checkpoint_sha256"), current["checkpoint_sha256"]
    if old_sha != new_sha:
        diffs.append("checkpoint: " + (f"{previous.get('checkpoint')} (no content hash recorded)" if not old_sha
                                       else f"{previous.get('checkpoint')} (sha256 {old_sha[:12]})")
                     + f" before, {current['checkpoint']} (sha256 {new_sha[:12]}) now")
    if previous.get("input_spec") != current["input_spec"]:
        diffs.append(f"input: {previous.get('input_spec') or previous.get('input')} before, {current['input_spec']} now")
    old, new = previous.get("settings"), current["settings"]
    if not isinstance(old, dict):
        diffs.append("settings: not recorded (written by an older s2r)")
        return diffs
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if key == "tile" and a != b:
            side = previous.get("max_side")
            if _effective_tile(a, side) == _effective_tile(b, side):
                continue
        if a != b:
            diffs.append(f"{key}: {a} before, {b} now")
    return diffs


# --- the command ----------------------------------------------------------------------------------


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
    label_space: str | None = None,
    device: torch.device | None = None,
) -> dict:
    """Translate (image models) or generate from (label models) every item of ``input_spec``.

    Returns the manifest, also written to ``OUTPUT/manifest.json``. While it runs, ``OUTPUT`` is
    locked (``OUTPUT/.s2r.lock``) against a second run. ``skip_existing`` keeps only outputs the
    existing manifest vouches for: same checkpoint content (sha256), same input spec and the
    same pixel-deciding settings; anything else is refused. ``label_space`` names the raw label
    values of a plain folder input (see :data:`LABEL_FORMATS`).
    """
    if overwrite and skip_existing:
        raise S2RError("--overwrite and --skip-existing contradict each other", hint="pick one")
    if batch_size < 1 or samples < 1 or tile < 0:
        raise S2RError("--batch-size and --samples must be >= 1, --tile >= 0")
    label_format(label_space)  # an unknown name fails before anything is loaded
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
    inputs = open_inputs(input_spec, ckpt.get("label_space"), entry.input_kind, label_space)

    if is_label:
        direction_note, read = None, inputs.read_label
    else:
        if direction not in DIRECTIONS:
            raise S2RError(f"unknown direction {direction!r}", hint="use a2b (synthetic -> real) or b2a (real -> synthetic)")
        direction_note, read = direction, inputs.read_image

    output = Path(output)
    _refuse_unsafe_output(output, input_spec, overwrite)
    read_translate_manifest(output)  # refuse a dataset root before even taking the lock
    ema = bool(use_ema and has_ema)
    settings = {"size": list(size) if size else None, "ema": ema, "label_space": label_space}
    settings.update({"samples": samples, "seed": seed} if is_label else {"direction": direction, "tile": tile})
    identity = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint_file(checkpoint)),
                "input_spec": canonical_spec(input_spec), "settings": settings}

    with folder_lock(output, command="s2r translate"):
        previous = read_translate_manifest(output)  # again, now that no other run can change it
        return _run_locked(
            model, inputs, output, previous, identity, ckpt=ckpt, entry=entry, is_label=is_label, read=read,
            direction=direction, direction_note=direction_note, batch_size=batch_size, size=size, tile=tile,
            samples=samples, seed=seed, stride=stride, overwrite=overwrite, skip_existing=skip_existing,
            input_spec=input_spec, device=device,
        )


def _plan(inputs: Inputs, output: Path, out_names: dict[int, list[str]], previous: dict | None, identity: dict,
          *, overwrite: bool, skip_existing: bool) -> tuple[list[int], set[str]]:
    """Which inputs to do, and which existing outputs stay (listed in the new manifest)."""
    images, labels = output / "images", output / "labels"
    writes_labels = inputs.read_label is not None
    names = [f for fs in out_names.values() for f in fs]
    present = {f for f in names if (images / f).exists() or (writes_labels and (labels / f).exists())}
    listed = previous.get("outputs") if previous else None
    listed = {str(f) for f in listed} if isinstance(listed, list) else set()
    listed_present = {f for f in listed if (images / f).exists()}
    everything = list(range(len(inputs.names)))
    if overwrite:
        leftovers = listed_present - set(names)
        if leftovers:
            warn(f"{len(leftovers)} output(s) of the earlier run in {output} are not outputs of this one and stay "
                 f"(e.g. {min(leftovers)}); the new manifest lists only this run's")
        return everything, set()
    if not skip_existing:
        if present:
            raise S2RError(f"{len(present)} of {len(names)} outputs already exist in {output}",
                           hint="pass --overwrite to replace them, or --skip-existing to keep them and do the rest")
        if listed_present:
            raise S2RError(f"{output} already holds {len(listed_present)} output(s) of another translate run "
                           f"(its manifest.json lists them, e.g. {min(listed_present)})",
                           hint="pass --skip-existing to add to them (same checkpoint, input and settings only), "
                                "--overwrite to replace the manifest, or choose another --output")
        return everything, set()
    if not present and not listed_present:
        return everything, set()
    if previous is None:
        raise S2RError(f"--skip-existing: {len(present)} output(s) exist in {output} but it has no manifest.json "
                       f"saying which checkpoint, input and settings made them",
                       hint="pass --overwrite to replace them, or choose another --output")
    diffs = _identity_diff(previous, identity)
    if diffs:
        raise S2RError(f"--skip-existing: the outputs in {output} were made differently ({'; '.join(diffs)}), "
                       f"so keeping them would mix two runs",
                       hint="pass --overwrite to replace them, or choose another --output")
    unlisted = sorted(present - listed)
    if unlisted:
        raise S2RError(f"--skip-existing: {len(unlisted)} file(s) in {output} are not listed in its manifest.json "
                       f"(e.g. {unlisted[0]}), so s2r cannot tell how they were made",
                       hint="delete them (an interrupted run may have left them) and run again, pass --overwrite "
                            "to redo everything, or choose another --output")
    todo = [i for i in everything if not all(f in listed_present for f in out_names[i])]
    return todo, listed_present


def _run_locked(model, inputs: Inputs, output: Path, previous: dict | None, identity: dict, *, ckpt: dict, entry,
                is_label: bool, read, direction: str, direction_note: str | None, batch_size: int,
                size: tuple[int, int] | None, tile: int, samples: int, seed: int, stride: int, overwrite: bool,
                skip_existing: bool, input_spec: str, device: torch.device) -> dict:
    out_names = {i: _image_out_names(n, samples) for i, n in enumerate(inputs.names)}
    todo, kept = _plan(inputs, output, out_names, previous, identity, overwrite=overwrite, skip_existing=skip_existing)
    done = set(kept)             # outputs the manifest vouches for
    unrecorded: list[str] = []   # written since the manifest last listed them
    written = 0
    unreadable = list(inputs.left_out)  # inputs left out under on_error=skip (when opened, then when read)
    tiled = 0                           # images translated in tiles
    max_side = (previous or {}).get("max_side") if kept else None
    manifest_path = output / "manifest.json"

    def manifest(status: str) -> dict:
        return {
            "kind": MANIFEST_KIND, "status": status,
            "checkpoint": str(identity["checkpoint"]), "checkpoint_sha256": identity["checkpoint_sha256"],
            "model": ckpt["model"], "step": ckpt.get("step"), "input": input_spec, "input_spec": identity["input_spec"],
            "input_kind": entry.input_kind, "direction": direction_note, "ema": identity["settings"]["ema"],
            "images": written, "skipped": len(inputs.names) - len(todo), "inputs": len(inputs.names),
            "unreadable": len(unreadable), "unreadable_inputs": sorted(unreadable), "tiled": tiled,
            "samples": samples, "seed": seed, "size": list(size) if size else None, "tile": tile,
            "max_side": max_side, "label_space": identity["settings"]["label_space"],
            "labels": inputs.read_label is not None, "space": inputs.space, "settings": identity["settings"],
            "outputs": sorted(done), "s2r_version": __version__,
        }

    def save(status: str) -> None:
        with writing(manifest_path, what="the manifest"):
            atomic_write_json(manifest_path, manifest(status))
        unrecorded.clear()

    # Before any output is touched, so an older manifest never vouches for files this run replaces.
    save("incomplete")
    last_save = time.monotonic()

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        try:
            x = read(i)
            label = inputs.read_label(i) if inputs.read_label is not None else None
        except S2RError as exc:
            if not inputs.skip_unreadable:
                raise
            unreadable.append(inputs.names[i])
            warn(f"left out {inputs.names[i]} ({len(unreadable)} so far, on_error=skip): {exc.message}")
            return None
        if size is not None:
            x = resize_label(x, size) if is_label else resize_image(x, size)
            label = resize_label(label, size) if label is not None else None
        return x, label

    again = ("run the same command again to redo them all" if overwrite
             else "run again with --skip-existing to do the rest")
    failed_hint = f"{manifest_path} lists the outputs completed so far; {again}"

    def write(array: np.ndarray, path: Path) -> None:
        with writing(path, hint=failed_hint):
            write_png(array, path)

    def tiles_for(h: int, w: int) -> int:
        """How many tiles an image of h x w is cut into (1: whole); says so the first time it is > 1."""
        nonlocal tiled
        count = tile_count(h, w, stride, tile) if tile and max(h, w) > tile else 1
        if count > 1:
            if not tiled:
                size_tile, overlap, _, _ = tile_grid(h, w, stride, tile)
                info(f"tiling: images larger than {tile} px are translated in {size_tile}x{size_tile} tiles "
                     f"overlapping by {overlap} px and blended ({count} tiles for {h}x{w}); the result can differ "
                     f"slightly from untiled (--tile 0)")
            tiled += 1
        return count

    finished = False
    try:
        with torch.inference_mode(), progress_bar(len(todo), "generate" if is_label else "translate") as advance:
            pending: list[tuple[int, np.ndarray, np.ndarray | None]] = []

            def flush() -> None:
                nonlocal written, last_save
                if not pending:
                    return
                moved = 0.0  # the bar moves per tile within a tiled image, else per image
                if is_label:
                    outs = [[_generate(model, x, stride, device, seed, i, s) for s in range(samples)]
                            for i, x, _ in pending]
                else:
                    batch = torch.stack([image_to_tensor(x) for _, x, _ in pending]).to(device)
                    fn = lambda t: model.translate(t, direction)  # noqa: E731
                    h, w = batch.shape[-2:]
                    if max(tiles_for(h, w) for _ in range(batch.shape[0])) > 1:  # (all of one size)
                        def on_tile(k: int, n: int) -> None:
                            nonlocal moved
                            advance(1 / n)
                            moved += 1 / n

                        y = torch.cat([run_tiled(fn, batch[j:j + 1], stride, tile, on_tile=on_tile)
                                       for j in range(batch.shape[0])])
                    else:
                        y = run_padded(fn, batch, stride)
                    outs = [[y[j]] for j in range(y.shape[0])]
                for (i, _, label), images in zip(pending, outs):
                    for fname, img in zip(out_names[i], images):
                        try:
                            write(tensor_to_image(img), output / "images" / fname)
                            if label is not None:  # one label per output image, so OUT stays a valid folder: dataset
                                write(label.astype(np.uint8), output / "labels" / fname)
                        except BaseException:
                            _remove_outputs(output, [fname])  # never an image without its label, or unlisted
                            done.discard(fname)
                            raise
                        done.add(fname)
                        unrecorded.append(fname)
                        written += 1
                advance(max(0.0, len(pending) - moved))
                pending.clear()
                if time.monotonic() - last_save > MANIFEST_EVERY_S:
                    save("incomplete")
                    last_save = time.monotonic()

            for i in todo:
                loaded = load(i)
                if loaded is None:  # unreadable, left out (on_error=skip)
                    advance()
                    continue
                x, label = loaded
                max_side = max(max_side or 0, *x.shape[:2])
                if pending and (len(pending) == batch_size or x.shape != pending[0][1].shape):
                    flush()
                pending.append((i, x, label))
            flush()
        finished = True
    finally:
        try:
            save("complete" if finished else "incomplete")
        except S2RError as exc:
            _remove_unrecorded(output, unrecorded, exc)
            if finished:
                raise

    notes = []
    if len(todo) < len(inputs.names):
        notes.append(f"skipped {len(inputs.names) - len(todo)}")
    if unreadable:
        notes.append(f"left out {len(unreadable)} unreadable input(s): {_examples(unreadable)}")
    if tiled:
        notes.append(f"{tiled} tiled")
    if todo and len(unreadable) - len(inputs.left_out) == len(todo):
        raise S2RError(f"every input of {input_spec} to translate was left out as unreadable (on_error=skip): "
                       f"{_examples(unreadable)}; nothing was written",
                       hint="check the files named in the warnings above, or the input spec")
    info(f"wrote {written} image(s) to {output / 'images'}" + (f" ({'; '.join(notes)})" if notes else ""))
    return manifest("complete")


def _examples(names: list[str], limit: int = 3) -> str:
    return ", ".join(sorted(names)[:limit]) + (" ..." if len(names) > limit else "")


def _remove_outputs(output: Path, names: list[str]) -> None:
    for name in names:
        for folder in ("images", "labels"):
            with contextlib.suppress(OSError):
                (output / folder / name).unlink()


def _remove_unrecorded(output: Path, names: list[str], exc: S2RError) -> None:
    """The manifest could not be updated: remove the outputs it does not list."""
    if not names:
        return
    _remove_outputs(output, names)
    warn(f"could not update {output / 'manifest.json'} ({exc.message}); removed the {len(names)} output(s) it does "
         f"not list, so it still describes the folder truthfully")


def _generate(model, label: np.ndarray, stride: int, device: torch.device, seed: int, index: int,
              sample: int) -> torch.Tensor:
    """One image from one label map; the noise comes from a generator seeded by (seed, index, sample)."""
    h, w = label.shape
    ph, pw = (-h) % stride, (-w) % stride
    padded = np.pad(label, ((0, ph), (0, pw)), mode="symmetric") if ph or pw else label
    labels = torch.from_numpy(np.array(padded, dtype=np.int64))[None].to(device)
    generator = torch.Generator(device=device).manual_seed(_generator_seed(seed, index, sample))
    return model.generate(labels, generator=generator)[0, :, :h, :w]
