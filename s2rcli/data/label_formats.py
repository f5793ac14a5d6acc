"""``--label-space``: how to read label files that hold a dataset's raw values.

``s2r translate --input`` and ``s2r segment-eval score --labels`` accept a plain folder of
label files in a dataset's own ids (GTA5 palette PNGs, SYNTHIA 16-bit class ids, CARLA tags,
...). :data:`LABEL_FORMATS` names the table and decoder of each, the same ones the dataset
adapters use (``data/tables.py``), and :func:`open_with_label_format` opens such a folder with
its labels converted into a model's label space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import S2RError
from . import io
from .datasets import Dataset, Sample, open_dataset, parse_spec
from .labels import RawTable, identity_table
from .tables import CARLA_TABLES, CITYSCAPES_LABEL_IDS, MAPILLARY_TABLES, SYNTHIA


@dataclass(frozen=True)
class LabelFormat:
    """How to read label files that hold a dataset's raw values (``--label-space``)."""

    description: str
    table: RawTable
    decode: Callable[[Path], np.ndarray]


LABEL_FORMATS: dict[str, LabelFormat] = {
    "trainid": LabelFormat("Cityscapes trainIds 0-18, 255 = ignore (labels already converted)",
                           identity_table("cityscapes19"), io.read_index_label),
    "cityscapes": LabelFormat("Cityscapes labelIds 0-33 (*_gtFine_labelIds.png)", CITYSCAPES_LABEL_IDS,
                              io.read_index_label),
    "gta5": LabelFormat("GTA5 palette PNGs, index = Cityscapes labelId", CITYSCAPES_LABEL_IDS, io.read_index_label),
    "synscapes": LabelFormat("Synscapes img/class PNGs (Cityscapes labelIds)", CITYSCAPES_LABEL_IDS,
                             io.read_index_label),
    "synthia": LabelFormat("SYNTHIA class ids 0-22 (16-bit PNGs, id in the first channel)", SYNTHIA,
                           io.read_first_channel_16bit),
    "mapillary": LabelFormat("Mapillary Vistas v1.2 ids 0-65 (minimal mapping)", MAPILLARY_TABLES["minimal"],
                             io.read_index_label),
    "carla-0.9.13": LabelFormat("CARLA 0.9.10-0.9.13 semantic tags 0-22 (red channel)", CARLA_TABLES["0.9.13"],
                                io.read_red_channel),
    "carla-0.9.14": LabelFormat("CARLA 0.9.14+ semantic tags 0-28 (red channel)", CARLA_TABLES["0.9.14"],
                                io.read_red_channel),
}
"""``--label-space`` choices: the raw label tables the dataset adapters use (``data/tables.py``), by dataset."""


def label_space_help(folder: str = "a plain folder", model: str = "the model") -> str:
    """The ``--label-space`` help text, listing the choices."""
    return (f"The raw label values of {folder}, converted into {model}'s label space with the dataset adapters' "
            f"tables: {', '.join(LABEL_FORMATS)} (trainid: Cityscapes trainIds 0-18, already converted). "
            f"Default: the labels are already in {model}'s label space.")


def label_format(name: str | None) -> LabelFormat | None:
    """The :data:`LABEL_FORMATS` entry called ``name`` (None for None); refuses unknown names."""
    if name is None:
        return None
    if name not in LABEL_FORMATS:
        raise S2RError(f"unknown --label-space {name!r}",
                       hint="valid choices: " + ", ".join(f"{k} ({v.description})" for k, v in LABEL_FORMATS.items()))
    return LABEL_FORMATS[name]


def open_with_label_format(spec: str, space: str, label_space: str | None) -> Dataset:
    """Open ``spec`` with labels in ``space``; with ``label_space``, its label files hold that dataset's raw values.

    ``label_space`` applies to plain folders (``folder:`` or a path): the files of ``labels/`` or,
    without one, the files themselves are label maps, converted with the same table as the
    dataset's adapter. Other kinds already know their labels and refuse it.
    """
    fmt = label_format(label_space)
    if fmt is None:
        return open_dataset(spec, space)
    parsed = parse_spec(spec)
    if parsed.kind != "folder":
        raise S2RError(f"--label-space {label_space} applies to plain folders, but {spec} is a {parsed.kind} "
                       f"dataset whose labels s2r already converts",
                       hint="drop --label-space, or pass the folder of label files itself")
    if "label_space" in parsed.options or "labels" in parsed.options:
        key = "label_space" if "label_space" in parsed.options else "labels"
        raise S2RError(f"{spec} sets {key}= and --label-space {label_space} is given too", hint="keep one")
    ds = open_dataset(parsed, space)
    samples = ds.samples if ds.has_labels else [Sample(s.name, None, s.image) for s in ds.samples]
    converted = Dataset(ds.kind, ds.root, ds.split, ds.space, samples, table=fmt.table, decode_label=fmt.decode,
                        on_error=ds.on_error, mismatch=ds.mismatch, spec=ds.spec)
    converted.skipped_unreadable = list(ds.skipped_unreadable)
    return converted
