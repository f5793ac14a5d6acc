"""The ``mapillary`` dataset adapter: Mapillary Vistas (66 palette ids mapped to 19 classes)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import Layout, Sample, _need_dir, _stems, pair_by_name, register_adapter
from ..tables import MAPILLARY_TABLES, MAPILLARY_V12_CLASSES

MAPILLARY_LAYOUT = ("PATH/<split>/images/*.jpg + PATH/<split>/v1.2/labels/*.png (palette ids 0-65), "
                    "PATH/config_v1.2.json; split training|validation|testing")


@register_adapter("mapillary", layout=MAPILLARY_LAYOUT, splits=("training", "validation", "testing"),
                  default_split="training",
                  options={"mapping": "minimal|liberal: the 66 -> 19 class mapping (default minimal)"})
def _open_mapillary(root: Path, split: str, options, space) -> Layout:
    mapping = options.get("mapping", "minimal")
    if mapping not in MAPILLARY_TABLES:
        raise S2RError(f"mapping={mapping!r} is not one of {', '.join(MAPILLARY_TABLES)}")
    layout = MAPILLARY_LAYOUT.replace("<split>", split)
    config = root / "config_v1.2.json"
    notes = []
    if config.is_file():
        try:
            names = [entry["name"] for entry in json.loads(config.read_text())["labels"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise S2RError(f"cannot read {config}: {exc}") from None
        if tuple(names) != MAPILLARY_V12_CLASSES:
            raise S2RError(f"{config} lists {len(names)} classes that differ from Mapillary Vistas v1.2's 66",
                           hint="only the v1.2 label set is supported (v2.0 has 124 classes)")
    else:
        notes.append("no config_v1.2.json: assuming the v1.2 class ids")
    image_dir = _need_dir(root / split / "images", root, layout, inside=("training", "validation", "testing"))
    images = _stems(image_dir, io.IMAGE_SUFFIXES)
    if not images:
        raise S2RError(f"no images under {image_dir}", hint=f"expected {layout}")
    label_dir = root / split / "v1.2" / "labels"
    if not label_dir.is_dir() and (root / split / "labels").is_dir():
        label_dir = root / split / "labels"  # releases before v1.2 kept labels directly under the split
    if split == "testing" or not label_dir.is_dir():
        notes.append("no labels for this split: reading images only")
        return Layout([Sample(n, p, None) for n, p in images.items()], notes=notes)
    samples, missing, orphans = pair_by_name(images, _stems(label_dir, (".png",)))
    return Layout(samples, MAPILLARY_TABLES[mapping], io.read_index_label, missing, orphans, notes=notes)
