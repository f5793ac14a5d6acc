"""The ``synscapes`` dataset adapter: Synscapes (img/rgb + img/class labelIds)."""

from __future__ import annotations

from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import Layout, _need_dir, _stems, pair_by_name, register_adapter
from ..tables import CITYSCAPES_LABEL_IDS

SYNSCAPES_LAYOUT = "PATH/img/rgb/N.png (or img/rgb-2k/) + PATH/img/class/N.png (Cityscapes labelIds) + PATH/meta/N.json"


@register_adapter("synscapes", layout=SYNSCAPES_LAYOUT,
                  options={"images": "rgb|rgb-2k: which image folder (default: rgb, else rgb-2k)"})
def _open_synscapes(root: Path, split, options, space) -> Layout:
    img = _need_dir(root / "img", root, SYNSCAPES_LAYOUT, inside=("img", "meta"))
    choice = options.get("images") or ("rgb" if (img / "rgb").is_dir() else "rgb-2k")
    if choice not in ("rgb", "rgb-2k"):
        raise S2RError(f"images={choice!r} is not one of rgb, rgb-2k")
    image_dir = _need_dir(img / choice, root, SYNSCAPES_LAYOUT)
    label_dir = _need_dir(img / "class", root, SYNSCAPES_LAYOUT)
    images, labels = _stems(image_dir, (".png",)), _stems(label_dir, (".png",))
    if not images:
        raise S2RError(f"no .png images under {image_dir}", hint=f"expected {SYNSCAPES_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)
    notes = [] if (root / "meta").is_dir() else ["no meta/ folder (not needed to read images and labels)"]
    # rgb-2k images are larger than the class maps: bring the labels to the image size (nearest).
    return Layout(samples, CITYSCAPES_LABEL_IDS, io.read_index_label, missing, orphans,
                  mismatch_default="resize" if choice == "rgb-2k" else None, notes=notes)
