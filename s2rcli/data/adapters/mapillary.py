"""The ``mapillary`` dataset adapter: Mapillary Vistas v1.1, v1.2 (66 classes) and v2.0 (124), mapped to 19 classes.

Which release is read follows the label folder found for the split (``version=auto``): v1.2's
``<split>/v1.2/labels`` with ``config_v1.2.json``, then v1.1's ``<split>/labels`` with
``config.json`` (the same 66 classes), then v2.0's ``<split>/v2.0/labels`` with ``config_v2.0.json``,
whose class ids are mapped by class name.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import S2RError
from .. import io
from ..datasets import Layout, Sample, _need_dir, _stems, pair_by_name, register_adapter
from ..labels import RawTable
from ..tables import (
    MAPILLARY_TABLES,
    MAPILLARY_V12_CLASSES,
    MAPILLARY_V12_CONFIGS,
    mapillary_v20_table,
)

MAPILLARY_LAYOUT = ("PATH/<split>/images/*.jpg + palette label PNGs in PATH/<split>/v1.2/labels/ (v1.2, ids 0-65, "
                    "PATH/config_v1.2.json), PATH/<split>/labels/ (v1.1, PATH/config.json) or "
                    "PATH/<split>/v2.0/labels/ (v2.0, ids 0-123, PATH/config_v2.0.json); "
                    "split training|validation|testing")
MAPILLARY_VERSIONS = {"v1.2": "v1.2/labels", "v1.1": "labels", "v2.0": "v2.0/labels"}
"""Release -> its label folder under the split, in the order ``version=auto`` tries them."""


@register_adapter("mapillary", layout=MAPILLARY_LAYOUT, splits=("training", "validation", "testing"),
                  default_split="training",
                  options={"mapping": "minimal|liberal: the mapping to the 19 classes (default minimal)",
                           "version": "auto|v1.1|v1.2|v2.0: which release's labels to read (default: the first of "
                                      "v1.2, v1.1, v2.0 whose label folder exists)"})
def _open_mapillary(root: Path, split: str, options, space) -> Layout:
    mapping = options.get("mapping", "minimal")
    if mapping not in MAPILLARY_TABLES:
        raise S2RError(f"mapping={mapping!r} is not one of {', '.join(MAPILLARY_TABLES)}")
    version = options.get("version", "auto")
    if version not in ("auto", *MAPILLARY_VERSIONS):
        raise S2RError(f"version={version!r} is not one of auto, {', '.join(MAPILLARY_VERSIONS)}")
    layout = MAPILLARY_LAYOUT.replace("<split>", split)
    image_dir = _need_dir(root / split / "images", root, layout, inside=("training", "validation", "testing"))
    images = _stems(image_dir, io.IMAGE_SUFFIXES)
    if not images:
        raise S2RError(f"no images under {image_dir}", hint=f"expected {layout}")
    searched = [f"{split}/{folder}/" for folder in MAPILLARY_VERSIONS.values()]
    if version == "auto":
        version = next((v for v, folder in MAPILLARY_VERSIONS.items() if (root / split / folder).is_dir()), None)
        if version is None:
            note = ("Mapillary testing labels are withheld: reading images only" if split == "testing" else
                    f"no labels for this split: searched {', '.join(searched)} under {root} (v1.2, v1.1 and v2.0 "
                    f"label folders); reading images only")
            return Layout([Sample(n, p, None) for n, p in images.items()], notes=[note])
    label_dir = root / split / MAPILLARY_VERSIONS[version]
    if not label_dir.is_dir():
        found = [f"{split}/{f}/" for f in MAPILLARY_VERSIONS.values() if (root / split / f).is_dir()]
        raise S2RError(f"no Mapillary {version} labels: {label_dir} not found",
                       hint=("found " + ", ".join(found) + "; pass ?version=auto") if found
                       else f"searched {', '.join(searched)} under {root}; expected {layout}")
    table, notes = (_v20_table(root, mapping) if version == "v2.0" else _v12_table(root, version, mapping))
    samples, missing, orphans = pair_by_name(images, _stems(label_dir, (".png",)))
    return Layout(samples, table, io.read_index_label, missing, orphans, notes=notes)


def _class_names(config: Path) -> tuple[str, ...]:
    try:
        return tuple(entry["name"] for entry in json.loads(config.read_text())["labels"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise S2RError(f"cannot read {config}: {exc}",
                       hint='expected the release\'s JSON file {"labels": [{"name": ...}, ...]}') from None


def _v12_table(root: Path, version: str, mapping: str) -> tuple[RawTable, list[str]]:
    """v1.1 and v1.2: 66 classes, listed in config_v1.2.json (v1.2) or config.json (v1.1)."""
    configs = MAPILLARY_V12_CONFIGS if version == "v1.2" else MAPILLARY_V12_CONFIGS[::-1]
    config = next((root / name for name in configs if (root / name).is_file()), None)
    if config is None:
        return MAPILLARY_TABLES[mapping], [f"no {' or '.join(configs)}: assuming the 66 class ids of v1.1/v1.2"]
    names = _class_names(config)
    if names != MAPILLARY_V12_CLASSES:
        other = (" (the v2.0 set: read it from PATH/<split>/v2.0/labels with config_v2.0.json)"
                 if len(names) == 124 else "")
        raise S2RError(f"{config} lists {len(names)} classes that differ from Mapillary Vistas v1.1/v1.2's 66{other}",
                       hint=f"labels in {version} folders need the 66-class {configs[0]}; supported: v1.1 "
                            "(config.json), v1.2 (config_v1.2.json), v2.0 (config_v2.0.json)")
    return MAPILLARY_TABLES[mapping], []


def _v20_table(root: Path, mapping: str) -> tuple[RawTable, list[str]]:
    """v2.0: the ids come from config_v2.0.json, mapped to the 19 classes by class name."""
    config = root / "config_v2.0.json"
    if not config.is_file():
        raise S2RError(f"Mapillary v2.0 labels need {config}: their class ids are mapped by the names listed there",
                       hint="copy config_v2.0.json from the v2.0 release next to the split folders, or read the "
                            "v1.2 labels (?version=v1.2)")
    names = _class_names(config)
    try:
        return mapillary_v20_table(names, mapping), []
    except KeyError as exc:
        missing = exc.args[0]
        raise S2RError(f"{config} lists {len(names)} classes and lacks {len(missing)} v2.0 class(es) that the "
                       f"{mapping} mapping needs: {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""),
                       hint="supported: v2.0's 124 classes (config_v2.0.json), v1.1/v1.2's 66 (config.json, "
                            "config_v1.2.json)") from None
