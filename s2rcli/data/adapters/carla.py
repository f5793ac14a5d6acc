"""The ``carla`` dataset adapter: CARLA semantic-camera exports (raw tags in the red channel, or CityScapesPalette colours)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ...errors import S2RError
from .. import io
from ..datasets import Layout, _stems, pair_by_name, register_adapter
from ..tables import CARLA_TABLES, UNKNOWN_COLOR, carla_color_table

CARLA_IMAGE_DIRS = ("rgb", "images", "CameraRGB")
CARLA_LABEL_DIRS = ("semantic", "semantic_segmentation", "labels", "CameraSemSeg")
CARLA_LAYOUT = ("PATH[/<episode>]/{rgb,images,CameraRGB}/*.png + the sibling {semantic,semantic_segmentation,labels,"
                "CameraSemSeg}/*.png: raw tags in the red channel, or CityScapesPalette colours")


@register_adapter("carla", layout=CARLA_LAYOUT,
                  options={"version": "0.9.13|0.9.14|auto: the semantic tag set (0.9.14 renumbered the tags)",
                           "labels": "raw|palette|auto: raw tags in the red channel, or CityScapesPalette colours"})
def _open_carla(root: Path, split, options, space) -> Layout:
    version = options.get("version", "auto")
    if version not in (*CARLA_TABLES, "auto"):
        raise S2RError(f"version={version!r} is not one of {', '.join(CARLA_TABLES)}, auto")
    kind = options.get("labels", "auto")
    if kind not in ("raw", "palette", "auto"):
        raise S2RError(f"labels={kind!r} is not one of raw, palette, auto")
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
    if not images:
        raise S2RError(f"no CARLA camera folders under {root}", hint=f"expected {CARLA_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)
    probe = [s.label for s in samples if s.label is not None]
    probe = probe[:: max(1, len(probe) // 8)][:8]
    notes = []
    if kind == "auto" and probe:
        kind = "raw" if all(_looks_like_raw_tags(io.read_rgb_label(p)) for p in probe[:2]) else "palette"
    if kind == "palette":
        colors, table = carla_color_table(None if version == "auto" else version)
        return Layout(samples, table, ColorLabelDecoder(colors, UNKNOWN_COLOR), missing, orphans, notes=notes)
    if version == "auto" and probe:
        version, why = _detect_carla_version([io.read_red_channel(p) for p in probe])
        notes.append(f"read the labels as CARLA {version} tags ({why}); pass ?version= to choose")
    table = CARLA_TABLES["0.9.14" if version == "auto" else version]
    return Layout(samples, table, io.read_red_channel, missing, orphans, notes=notes)


class ColorLabelDecoder:
    """Decode a colour-coded label image to codes (a plain object, so datasets pickle to worker processes)."""

    def __init__(self, colors: Mapping[tuple[int, int, int], int], unknown: int):
        self.colors, self.unknown = dict(colors), unknown

    def __call__(self, path: Path) -> np.ndarray:
        return io.colors_to_ids(io.read_rgb_label(path), self.colors, self.unknown)


def _looks_like_raw_tags(rgb: np.ndarray) -> bool:
    """Raw semantic output: small tags in red, green and blue empty."""
    return int(rgb[..., 0].max()) <= 28 and not rgb[..., 1:].any()


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
