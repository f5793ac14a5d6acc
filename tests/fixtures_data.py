"""Writers of tiny datasets in the real on-disk layouts, for the data-layer tests.

Every writer returns the arrays it wrote, so tests can compare what an adapter reads back
pixel by pixel with values computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def rgb(seed: int, h: int = 6, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(array: np.ndarray, path: Path, mode: str | None = None, palette: list[int] | None = None) -> Path:
    """Save as PNG; ``mode="P"`` writes an 8-bit palette PNG whose indices are ``array``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode == "P":
        image.putpalette(palette or [v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])  # L -> P
        assert image.mode == "P"
    image.save(path)
    return path


def folder_dataset(root: Path, labels: dict[str, np.ndarray], *, images: list[str] | None = None,
                   suffix: str = ".png") -> dict[str, np.ndarray]:
    """root/images/<name><suffix> (+ root/labels/<name>.png for names in ``labels``)."""
    written = {}
    for k, name in enumerate(images if images is not None else list(labels)):
        shape = labels[name].shape if name in labels else (6, 8)
        written[name] = rgb(k, *shape)
        save(written[name], root / "images" / f"{name}{suffix}")
    for name, label in labels.items():
        save(label.astype(np.uint8), root / "labels" / f"{name}.png")
    return written


# Raw label blocks used by the adapter fixtures: a 2x4 grid of raw values, each value repeated over a
# 3x2 block so the label is 6x8 like the images.
def blocks(values: list[list[int]], dtype=np.uint8) -> np.ndarray:
    return np.array(values, dtype).repeat(3, 0).repeat(2, 1)


def cityscapes(root: Path, raw: np.ndarray) -> dict[str, np.ndarray]:
    """Two cities in train, one in val; distractor gtFine files (color, instanceIds, polygons) beside the labelIds."""
    out = {}
    for k, (split, city, seq, frame) in enumerate([("train", "aachen", 0, 19), ("train", "bochum", 12, 5),
                                                    ("val", "lindau", 1, 2)]):
        stem = f"{city}_{seq:06d}_{frame:06d}"
        out[f"{split}:{city}/{stem}"] = save(rgb(k), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        gt = root / "gtFine" / split / city
        save(np.roll(raw, k, axis=1), gt / f"{stem}_gtFine_labelIds.png")
        save(rgb(99), gt / f"{stem}_gtFine_color.png")
        save((np.roll(raw, k, axis=1).astype(np.uint16) * 1000), gt / f"{stem}_gtFine_instanceIds.png")
        (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
    save(rgb(7), root / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png")
    return out


def gta5(root: Path, raw: np.ndarray) -> None:
    """00001 and 00003 (no 00002: numbering is not contiguous); 00004's label is smaller than its image."""
    for k, name in enumerate(["00001", "00003", "00004"]):
        save(rgb(k), root / "images" / f"{name}.png")
    save(raw, root / "labels" / "00001.png", mode="P")
    save(np.flipud(raw).copy(), root / "labels" / "00003.png", mode="P")
    save(raw[::2, ::2].copy(), root / "labels" / "00004.png", mode="P")


def synscapes(root: Path, raw: np.ndarray) -> None:
    for n in (1, 2, 10):
        save(rgb(n), root / "img" / "rgb" / f"{n}.png")
        save(np.roll(raw, n, axis=0), root / "img" / "class" / f"{n}.png")
        (root / "meta").mkdir(parents=True, exist_ok=True)
        (root / "meta" / f"{n}.json").write_text('{"camera": {"intrinsic": {"resx": 8, "resy": 6}}}')


def synthia(root: Path, classes: np.ndarray) -> None:
    """16-bit, 3-channel label PNGs: class in the first (red) channel, an instance id in the second."""
    import cv2

    for k, name in enumerate(["0000000", "0000001"]):
        save(rgb(k), root / "RGB" / f"{name}.png")
        label = np.zeros(classes.shape + (3,), np.uint16)
        label[..., 0] = np.roll(classes, k, axis=1)   # R: class
        label[..., 1] = 4000 + k                       # G: instance id, large 16-bit values
        (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "GT" / "LABELS" / f"{name}.png"), label[..., ::-1].copy())  # OpenCV wants BGR


def mapillary(root: Path, raw: np.ndarray, names: tuple[str, ...]) -> None:
    import json

    (root).mkdir(parents=True, exist_ok=True)
    config = {"labels": [{"name": n, "readable": n, "color": [i, i, i], "instances": False, "evaluate": True}
                         for i, n in enumerate(names)]}
    (root / "config_v1.2.json").write_text(json.dumps(config))
    for k, name in enumerate(["-abc_Z01", "xyz"]):
        save(rgb(k), root / "training" / "images" / f"{name}.jpg")
        save(np.roll(raw, k, axis=1), root / "training" / "v1.2" / "labels" / f"{name}.png", mode="P")
        save(rgb(k), root / "training" / "v1.2" / "instances" / f"{name}.png")
    save(rgb(5), root / "validation" / "images" / "v.jpg")
    save(raw, root / "validation" / "v1.2" / "labels" / "v.png", mode="P")


def carla_raw(root: Path, tags: np.ndarray, episode: str = "episode_000") -> None:
    """CARLA raw semantic output saved as PNG: tag in red, green and blue zero (alpha 255)."""
    for k, frame in enumerate(["000120", "000121"]):
        save(rgb(k), root / episode / "rgb" / f"{frame}.png")
        label = np.zeros(tags.shape + (4,), np.uint8)
        label[..., 0] = tags
        label[..., 3] = 255
        save(label, root / episode / "semantic" / f"{frame}.png")


def carla_palette(root: Path, colors: np.ndarray) -> None:
    for k, frame in enumerate(["000001", "000002"]):
        save(rgb(k), root / "CameraRGB" / f"{frame}.png")
        save(colors, root / "CameraSemSeg" / f"{frame}.png")
