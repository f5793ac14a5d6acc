"""The ``cityscapes`` dataset adapter: Cityscapes (leftImg8bit + gtFine labelIds).

The images are PNG as released; copies converted to JPEG (``*_leftImg8bit.jpg``) are read too, with a
note that JPEG artefacts change FID compared with the PNG originals.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import Layout, Sample, _need_dir, _stems, pair_by_name, register_adapter
from ..tables import CITYSCAPES_LABEL_IDS

CITYSCAPES_LAYOUT = ("PATH/leftImg8bit/<split>/<city>/*_leftImg8bit.png (or .jpg) + "
                     "PATH/gtFine/<split>/<city>/*_gtFine_labelIds.png")
JPEG_NOTE = ("the images are JPEG (*_leftImg8bit.jpg), not the released PNGs: JPEG artefacts change FID, so FID "
             "against this copy is not comparable with FID against the PNG originals")


@register_adapter("cityscapes", layout=CITYSCAPES_LAYOUT, splits=("train", "val", "test"), default_split="train")
def _open_cityscapes(root: Path, split: str, options, space) -> Layout:
    layout = CITYSCAPES_LAYOUT.replace("<split>", split)
    image_dir = _need_dir(root / "leftImg8bit" / split, root, layout, inside=("leftImg8bit", "gtFine"))
    images = _stems(image_dir, (".png", ".jpg", ".jpeg"), strip="_leftImg8bit")
    images = {n: p for n, p in images.items() if p.stem.endswith("_leftImg8bit")}
    if not images:
        raise S2RError(f"no *_leftImg8bit.png (or .jpg) under {image_dir}", hint=f"expected {layout}")
    notes = [JPEG_NOTE] if any(p.suffix.lower() != ".png" for p in images.values()) else []
    label_dir = root / "gtFine" / split
    if split == "test" or not label_dir.is_dir():
        note = ("Cityscapes test labels are withheld: reading images only" if split == "test"
                else f"no gtFine/{split}/ folder: reading images only")
        return Layout([Sample(n, p, None) for n, p in images.items()], notes=notes + [note])
    labels = _stems(label_dir, (".png",), strip="_gtFine_labelIds", must_end="_gtFine_labelIds.png")
    samples, missing, orphans = pair_by_name(images, labels)
    return Layout(samples, CITYSCAPES_LABEL_IDS, io.read_index_label, missing, orphans, notes=notes)
