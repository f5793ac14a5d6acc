"""The ``demo`` dataset adapter: the procedural demo worlds written by `s2r prepare demo`."""

from __future__ import annotations

from pathlib import Path

from ...errors import S2RError
from ..datasets import Layout, _images_and_labels, register_adapter
from ..labels import LabelSpace, get_label_space, identity_table

DEMO_SPLITS = ("synthetic", "real", "real_val")
DEMO_LAYOUT = "PATH/{synthetic,real,real_val}/{images,labels}/*.png and PATH/manifest.json, written by " \
              "`s2r prepare demo --out PATH`"


@register_adapter("demo", layout=DEMO_LAYOUT, splits=DEMO_SPLITS, default_split="synthetic")
def _open_demo(root: Path, split: str, options, space: LabelSpace) -> Layout:
    if not (root / "manifest.json").is_file():
        raise S2RError(f"{root} is not a complete demo world (no manifest.json)",
                       hint=f"write one with `s2r prepare demo --out {root}`")
    folder = root / split
    table = identity_table(get_label_space("cityscapes19"))
    return _images_and_labels(folder / "images", folder / "labels", table, layout=DEMO_LAYOUT)
