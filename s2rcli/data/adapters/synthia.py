"""The ``synthia`` dataset adapter: SYNTHIA RAND_CITYSCAPES (RGB/ + 16-bit GT/LABELS/)."""

from __future__ import annotations

from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import Layout, _need_dir, _stems, pair_by_name, register_adapter
from ..tables import SYNTHIA

SYNTHIA_LAYOUT = "PATH/RGB/NNNNNNN.png + PATH/GT/LABELS/NNNNNNN.png (16-bit, class id in the first channel)"


@register_adapter("synthia", layout=SYNTHIA_LAYOUT)
def _open_synthia(root: Path, split, options, space) -> Layout:
    image_dir = _need_dir(root / "RGB", root, SYNTHIA_LAYOUT, inside=("RGB", "GT"))
    label_dir = _need_dir(root / "GT" / "LABELS", root, SYNTHIA_LAYOUT, inside=("GT", "LABELS"))
    images, labels = _stems(image_dir, (".png",)), _stems(label_dir, (".png",))
    if not images:
        raise S2RError(f"no .png images under {image_dir}", hint=f"expected {SYNTHIA_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)
    # Pillow decodes these 16-bit 3-channel PNGs silently wrong; OpenCV reads them right.
    return Layout(samples, SYNTHIA, io.read_first_channel_16bit, missing, orphans)
