"""The ``carla`` dataset adapter: CARLA semantic-camera exports.

Labels come in three forms, told apart with ``labels=auto`` (the default) from the first label files:

- raw tags in the red channel of an RGB(A) image (``save_to_disk(..., ColorConverter.Raw)``);
- raw tags in a single-channel greyscale image, 8- or 16-bit (many exports, CarlaScapes among them);
- CityScapesPalette colours.

Layouts: camera folders (``[<episode>/]rgb/`` + sibling ``semantic/`` and their aliases), or
CarlaScapes' one folder with ``*_img.png`` beside ``*_labelIds.png``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from ...errors import S2RError
from .. import io
from ..datasets import Layout, _stems, list_files, pair_by_name, register_adapter
from ..labels import COLOR_CODE_BASE, IGNORE, UNKNOWN, LabelSpace, RawTable
from ..tables import CARLA_TABLES, carla_color_table

CARLA_IMAGE_DIRS = ("rgb", "images", "CameraRGB")
CARLA_LABEL_DIRS = ("semantic", "semantic_segmentation", "labels", "CameraSemSeg")
CARLASCAPES_IMAGE, CARLASCAPES_LABEL = "_img", "_labelIds"
CARLA_LAYOUT = ("PATH[/<episode>]/{rgb,images,CameraRGB}/*.png + the sibling {semantic,semantic_segmentation,labels,"
                "CameraSemSeg}/*.png, or (CarlaScapes) PATH/**/<name>_img.png beside <name>_labelIds.png; labels: "
                "raw tags (greyscale, or in the red channel) or CityScapesPalette colours")
SINGLE_CHANNEL_MODES = ("L", "I;16", "I;16B", "I;16L", "I")
"""Pillow modes of greyscale label images: the pixel value is the tag itself."""


@register_adapter("carla", layout=CARLA_LAYOUT,
                  options={"version": "0.9.13|0.9.14|auto: the semantic tag set (0.9.14 renumbered the tags)",
                           "labels": "raw|palette|auto: raw tags (greyscale image, or the red channel), or "
                                     "CityScapesPalette colours"})
def _open_carla(root: Path, split, options, space: LabelSpace) -> Layout:
    version = options.get("version", "auto")
    if version not in (*CARLA_TABLES, "auto"):
        raise S2RError(f"version={version!r} is not one of {', '.join(CARLA_TABLES)}, auto")
    kind = options.get("labels", "auto")
    if kind not in ("raw", "palette", "auto"):
        raise S2RError(f"labels={kind!r} is not one of raw, palette, auto")
    images, labels = _camera_folders(root)
    if not images:
        images, labels = _carlascapes_folder(root)
    if not images:
        raise S2RError(f"no CARLA camera folders and no *{CARLASCAPES_IMAGE}.png files under {root}",
                       hint=f"expected {CARLA_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)
    probe = [s.label for s in samples if s.label is not None]
    probe = probe[:: max(1, len(probe) // 8)][:8]
    notes = []
    if kind == "auto" and probe:
        kind = _label_kind(probe[:2])
    if kind == "palette":
        colors, table = carla_color_table(None if version == "auto" else version)
        decoder = ColorLabelDecoder(colors)
        if probe:
            _check_probes(probe, [decoder(probe[0])], table, space)
        return Layout(samples, table, decoder, missing, orphans, notes=notes)
    tag_maps = [read_tags(p) for p in probe]
    if version == "auto" and probe:
        version, why = _detect_carla_version(tag_maps)
        notes.append(f"read the labels as CARLA {version} tags ({why}); pass ?version=0.9.13 or ?version=0.9.14 "
                     f"to choose")
    table = CARLA_TABLES["0.9.14" if version == "auto" else version]
    if probe:
        _check_probes(probe, tag_maps, table, space)
    return Layout(samples, table, read_tags, missing, orphans, notes=notes)


def _camera_folders(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``[<episode>/]rgb/`` + sibling ``semantic/`` (and their aliases), at any depth."""
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for dirpath, dirnames, _files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        image_dir = next((here / d for d in CARLA_IMAGE_DIRS if d in dirnames), None)
        label_dir = next((here / d for d in CARLA_LABEL_DIRS if d in dirnames), None)
        if image_dir is None:
            continue
        prefix = "" if here == root else here.relative_to(root).as_posix() + "/"
        images.update({prefix + n: p for n, p in _stems(image_dir, (".png", ".jpg")).items()})
        if label_dir is not None:
            labels.update({prefix + n: p for n, p in _stems(label_dir, (".png",)).items()})
        dirnames[:] = [d for d in dirnames if d not in CARLA_IMAGE_DIRS + CARLA_LABEL_DIRS]
    return images, labels


def _carlascapes_folder(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """CarlaScapes: ``<name>_img.png`` and ``<name>_labelIds.png`` side by side (in PATH or below it)."""
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in list_files(root, (".png", ".jpg")):
        stem = path.relative_to(root).with_suffix("").as_posix()
        for suffix, found in ((CARLASCAPES_IMAGE, images), (CARLASCAPES_LABEL, labels)):
            if stem.endswith(suffix) and (found is images or path.suffix.lower() == ".png"):
                name = stem[: -len(suffix)]
                if name in found:
                    raise S2RError(f"two files share the name {name!r}: {found[name]} and {path}",
                                   hint="keep one of them")
                found[name] = path
    return images, labels


def _label_mode(path: Path) -> str | None:
    """The Pillow mode from the file header (no pixels decoded); None if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, SyntaxError, ValueError):
        return None


def read_tags(path: str | Path) -> np.ndarray:
    """CARLA semantic tags as stored: the one channel of a greyscale image (8- or 16-bit), or the red
    channel of the raw camera output (RGB/RGBA)."""
    if _label_mode(Path(path)) in SINGLE_CHANNEL_MODES:
        return io.read_index_label(path)
    return io.read_red_channel(path)


class ColorLabelDecoder:
    """Decode a CityScapesPalette label image to codes (a plain object, so datasets pickle to worker processes).

    Palette colours give their code; any other colour gives ``COLOR_CODE_BASE + (r << 16 | g << 8 | b)``,
    so what is reported is the colour the file holds.
    """

    def __init__(self, colors: Mapping[tuple[int, int, int], int]):
        self.keys = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in colors), np.int64)
        self.values = np.array([colors[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in self.keys], np.int64)

    def __call__(self, path: Path) -> np.ndarray:
        packed = io.pack_rgb(io.read_rgb_label(path)).astype(np.int64)
        pos = np.clip(np.searchsorted(self.keys, packed), 0, len(self.keys) - 1)
        return np.where(self.keys[pos] == packed, self.values[pos], packed + COLOR_CODE_BASE).astype(np.uint32)


def _label_kind(paths: list[Path]) -> str:
    """``raw`` for greyscale tag images or tags in the red channel, else ``palette``."""
    if all(_label_mode(p) in SINGLE_CHANNEL_MODES for p in paths):
        return "raw"
    return "raw" if all(_looks_like_raw_tags(io.read_rgb_label(p)) for p in paths) else "palette"


def _looks_like_raw_tags(rgb: np.ndarray) -> bool:
    """Raw semantic output: small tags in red with green and blue empty, or a grey image of small tags
    (no CityScapesPalette colour but black is grey with all channels at most 28)."""
    red = rgb[..., 0]
    if int(red.max()) > 28:
        return False
    return not rgb[..., 1:].any() or bool((rgb[..., 1] == red).all() and (rgb[..., 2] == red).all())


def _check_probes(paths: list[Path], raws: list[np.ndarray], table: RawTable, space: LabelSpace) -> None:
    """Labels that map to no class at all are misread: say so when the dataset is opened, with the values
    the files hold, rather than let a command turn every pixel into ignore."""
    lut = table.lut(space)
    values: dict[int, int] = {}
    for raw in raws:
        found, counts = np.unique(raw, return_counts=True)
        mapped = np.where(found < lut.shape[0], lut[np.minimum(found, lut.shape[0] - 1)], UNKNOWN)
        if ((mapped != IGNORE) & (mapped != UNKNOWN)).any():
            return
        for v, c in zip(found.tolist(), counts.tolist()):
            values[v] = values.get(v, 0) + c
    listed = table.describe_counts(list(values), list(values.values()))
    where = paths[0] if len(raws) == 1 else f"the {len(raws)} label files probed ({paths[0]} ...)"
    raise S2RError(f"no pixel of {where} maps to a {space.name} class when read as {table.name}: "
                   f"values found {listed}",
                   hint=(table.hint + "; " if table.hint else "") + "every pixel would become ignore (255)")


def _detect_carla_version(tag_maps: list[np.ndarray]) -> tuple[str, str]:
    """Tell the two tag sets apart: tags above 22 exist only from 0.9.14; otherwise look at what is at
    the top of the frame (sky: 13 before 0.9.14, 11 after) and at the bottom (road: 7 before, 1 after)."""
    top = np.concatenate([m[: max(1, m.shape[0] // 20)].ravel() for m in tag_maps])
    bottom = np.concatenate([m[-max(1, m.shape[0] // 20):].ravel() for m in tag_maps])
    if max(int(m.max()) for m in tag_maps) > 22:
        return "0.9.14", "tags above 22 present"
    old = int((top == 13).sum() + (bottom == 7).sum())
    new = int((top == 11).sum() + (bottom == 1).sum())
    if old == new:
        raise S2RError("cannot tell which CARLA tag set these labels use",
                       hint="pass ?version=0.9.13 (tags 0-22) or ?version=0.9.14 (tags 0-28) in the spec")
    return ("0.9.13", "sky is tag 13 / road is tag 7") if old > new else ("0.9.14", "sky is tag 11 / road is tag 1")
