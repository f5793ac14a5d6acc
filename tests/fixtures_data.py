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
