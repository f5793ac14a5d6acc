"""The ``folder`` dataset adapter: a folder of images with optional labels/ (also the output of `s2r translate`)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import (
    Layout,
    Sample,
    _images_and_labels,
    list_files,
    pair_by_name,
    register_adapter,
)
from ..labels import LabelSpace, get_label_space, identity_table


def _manifest_space(root: Path) -> str | None:
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return data.get("space") if isinstance(data, dict) else None


FOLDER_LAYOUT = "PATH/images/**/*.{png,jpg} (or images directly in PATH) + optional PATH/labels/<same name>.png"


@register_adapter("folder", layout=FOLDER_LAYOUT,
                  options={"label_space": "the space the labels are stored in (default: manifest.json's, "
                                          "else the requested space)",
                           "labels": "none: read the images only, ignoring any labels/ (FID, scoring)"})
def _open_folder(root: Path, split, options, space: LabelSpace) -> Layout:
    if options.get("labels", "none") != "none":
        raise S2RError(f"folder option labels={options['labels']!r} is not known", hint="the only value is labels=none")
    image_dir = root / "images" if (root / "images").is_dir() else root
    label_dir = root / "labels" if (root / "labels").is_dir() and "labels" not in options else None
    stored = options.get("label_space") or _manifest_space(root) or space.name
    table = identity_table(get_label_space(stored)) if label_dir is not None else None
    if image_dir == root:
        # Images directly in PATH: do not descend into folders that hold labels or other outputs.
        images = {p.stem: p for p in list_files(root, recursive=False)}
        if not images:
            raise S2RError(f"no images (.png/.jpg) in {root}", hint=f"expected {FOLDER_LAYOUT}")
        if label_dir is None:
            return Layout([Sample(n, p, None) for n, p in images.items()])
        labels = {p.stem: p for p in list_files(label_dir, (".png",), recursive=False)}
        samples, missing, orphans = pair_by_name(images, labels)
        return Layout(samples, table, io.read_index_label, missing, orphans)
    return _images_and_labels(image_dir, label_dir, table, layout=FOLDER_LAYOUT)
