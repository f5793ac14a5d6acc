"""The ``gta5`` dataset adapter: GTA5 / Playing for Data (images/ + palette labels/ holding Cityscapes labelIds)."""

from __future__ import annotations

from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import Layout, _need_dir, _stems, pair_by_name, register_adapter
from ..tables import CITYSCAPES_LABEL_IDS

GTA5_LAYOUT = "PATH/images/NNNNN.png + PATH/labels/NNNNN.png (palette PNGs, index = Cityscapes labelId)"


@register_adapter("gta5", layout=GTA5_LAYOUT)
def _open_gta5(root: Path, split, options, space) -> Layout:
    image_dir = _need_dir(root / "images", root, GTA5_LAYOUT, inside=("images", "labels"))
    label_dir = _need_dir(root / "labels", root, GTA5_LAYOUT)
    images, labels = _stems(image_dir, (".png",)), _stems(label_dir, (".png",))
    if not images:
        raise S2RError(f"no .png images under {image_dir}", hint=f"expected {GTA5_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)  # by name: some copies skip numbers
    # A few GTA5 pairs have an image and a label of different sizes: resize (reported) unless told otherwise.
    return Layout(samples, CITYSCAPES_LABEL_IDS, io.read_index_label, missing, orphans, mismatch_default="resize")
