"""Label spaces, and the lookup tables that carry raw label values into them.

A :class:`LabelSpace` is the vocabulary a model is trained and evaluated in:

- ``cityscapes19`` (the default): Cityscapes' 19 train classes, 255 = ignore;
- ``cityscapes34``: the Cityscapes label ids 0-33 (USIS and the Pragmatic-SIS paper use it);
- ``synthia16`` / ``synthia13``: the 16- and 13-class subsets of ``cityscapes19`` that SYNTHIA
  is evaluated on (it has no terrain, truck or train; the 13-class subset also drops wall,
  fence and pole), numbered compactly.

The Cityscapes table comes from ``cityscapesscripts.helpers.labels``; it is not retyped here.

A :class:`RawTable` maps a dataset's raw label values (GTA5 palette indices, SYNTHIA class
ids, CARLA tags, ...) into ``cityscapes34`` or ``cityscapes19``; :meth:`RawTable.lut` composes
it with the conversion into the requested space, so reading a label is one ``lut[label]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from ..errors import S2RError

IGNORE = 255
UNKNOWN = 254
"""Sentinel a composed lookup table gives raw values that are not in the dataset's table.

No label space has more than 34 classes, so 254 never collides with a class id.
"""
COLOR_CODE_BASE = 1 << 24
"""Colour-coded labels: a colour outside the palette is decoded to this plus ``r << 16 | g << 8 | b``,
so messages can name the colour the file holds (see :meth:`RawTable.describe`)."""


@dataclass(frozen=True)
class LabelSpace:
    """A set of classes with display colours; label maps hold ids ``0..num_classes-1`` or 255."""

    name: str
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE
    train_ids: tuple[int, ...] = field(default=(), compare=False)
    """For each class, its ``cityscapes19`` trainId (255 where it has none)."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index(self, class_name: str) -> int:
        """The id of a class by name, e.g. ``space.index("car")``."""
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise S2RError(f"label space {self.name} has no class {class_name!r}",
                           hint="valid classes: " + ", ".join(self.class_names)) from None

    def palette(self) -> np.ndarray:
        """A 256x3 uint8 colour table: class colours, black for ignore and unused ids."""
        table = np.zeros((256, 3), np.uint8)
        table[: self.num_classes] = np.asarray(self.colors, np.uint8)
        return table


def _cityscapes19() -> LabelSpace:
    by_train_id = {}
    for label in _CS_LABELS:
        if 0 <= label.trainId < IGNORE and not label.ignoreInEval:
            by_train_id[label.trainId] = label
    ids = sorted(by_train_id)
    assert ids == list(range(19)), ids
    return LabelSpace(
        "cityscapes19",
        tuple(by_train_id[i].name for i in ids),
        tuple(tuple(by_train_id[i].color) for i in ids),
        train_ids=tuple(ids),
    )


def _cityscapes34() -> LabelSpace:
    by_id = {label.id: label for label in _CS_LABELS if 0 <= label.id < 34}
    assert sorted(by_id) == list(range(34))
    return LabelSpace(
        "cityscapes34",
        tuple(by_id[i].name for i in range(34)),
        tuple(tuple(by_id[i].color) for i in range(34)),
        train_ids=tuple(by_id[i].trainId if 0 <= by_id[i].trainId < IGNORE else IGNORE for i in range(34)),
    )


SYNTHIA16_TRAIN_IDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
"""The cityscapes19 trainIds of SYNTHIA's 16-class evaluation (no terrain 9, truck 14, train 16)."""
SYNTHIA13_TRAIN_IDS = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
"""The 13-class evaluation: the 16 classes less wall 3, fence 4 and pole 5."""


def _subset(name: str, train_ids: tuple[int, ...]) -> LabelSpace:
    cs19 = _cityscapes19()
    return LabelSpace(name, tuple(cs19.class_names[i] for i in train_ids),
                      tuple(cs19.colors[i] for i in train_ids), train_ids=train_ids)


_BUILDERS = {
    "cityscapes19": _cityscapes19,
    "cityscapes34": _cityscapes34,
    "synthia16": lambda: _subset("synthia16", SYNTHIA16_TRAIN_IDS),
    "synthia13": lambda: _subset("synthia13", SYNTHIA13_TRAIN_IDS),
}


def list_label_spaces() -> list[str]:
    return list(_BUILDERS)


@lru_cache(maxsize=None)
def _build(name: str) -> LabelSpace:
    return _BUILDERS[name]()


def get_label_space(space: str | LabelSpace = "cityscapes19") -> LabelSpace:
    """A label space by name (``cityscapes19``, ``cityscapes34``, ``synthia16``, ``synthia13``)."""
    if isinstance(space, LabelSpace):
        return space
    if space not in _BUILDERS:
        raise S2RError(f"unknown label space {space!r}", hint="valid label spaces: " + ", ".join(_BUILDERS))
    return _build(space)


def colorize(label: np.ndarray, space: str | LabelSpace = "cityscapes19") -> np.ndarray:
    """An HxW label map as an HxWx3 uint8 RGB image in the space's colours (ignore is black)."""
    return get_label_space(space).palette()[np.asarray(label, dtype=np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, space: str | LabelSpace = "cityscapes19",
            alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised label over an RGB image; ignored pixels keep the image."""
    colours = colorize(label, space).astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = (np.asarray(label) == IGNORE)[..., None]
    return np.where(keep, image, blended.round()).astype(np.uint8)


@lru_cache(maxsize=None)
def conversion_lut(source: str, target: str) -> np.ndarray:
    """A 256-entry uint8 table from ids in ``source`` to ids in ``target`` (255 where none).

    Conversions go through the cityscapes19 trainIds, except between identical spaces, which are
    the identity (so cityscapes34 keeps all 34 ids).
    """
    src, dst = get_label_space(source), get_label_space(target)
    lut = np.full(256, IGNORE, np.uint8)
    if src.name == dst.name:
        lut[: src.num_classes] = np.arange(src.num_classes)
        return lut
    to_dst = np.full(256, IGNORE, np.uint8)  # cityscapes19 trainId -> id in target
    for k, train_id in enumerate(dst.train_ids):
        if train_id != IGNORE and to_dst[train_id] == IGNORE:
            to_dst[train_id] = k  # several cityscapes34 ids never share a trainId; first one wins anyway
    for k, train_id in enumerate(src.train_ids):
        lut[k] = to_dst[train_id] if train_id != IGNORE else IGNORE
    return lut


@dataclass(frozen=True, eq=False)  # hashed by identity, so composed tables can be cached
class RawTable:
    """How a dataset's raw label values map into a label space (``target``).

    ``mapping`` lists raw value -> id in ``target``. Raw values in ``known`` (default: every
    value from 0 to the largest key) that are not in ``mapping`` map to 255 (ignore); any
    other raw value is *unknown*: it maps to :data:`UNKNOWN` so it can be reported.
    """

    name: str
    target: str
    mapping: Mapping[int, int]
    known: tuple[int, ...] | None = None
    description: str = ""
    value_format: str = "int"
    """How raw values are shown in messages: ``int``, or ``rgb`` for colour-coded labels, whose
    colours outside the palette are coded as ``COLOR_CODE_BASE + (r << 16 | g << 8 | b)`` and shown
    as ``rgb(r,g,b)`` (the colour found in the file, never a placeholder)."""
    hint: str = ""
    """What to try when a file holds values outside the table (added to the error's hint)."""

    def describe(self, value: int) -> str:
        """A raw value as the file holds it: ``7``, or ``rgb(7,7,7)`` for a colour outside the palette."""
        value = int(value)
        if self.value_format == "rgb" and value >= COLOR_CODE_BASE:
            packed = value - COLOR_CODE_BASE
            return f"rgb({(packed >> 16) & 255},{(packed >> 8) & 255},{packed & 255})"
        return str(value)

    def describe_counts(self, values, counts, limit: int = 8) -> str:
        """``7 (120 px), 9 (4 px)``: the first ``limit`` raw values with their pixel counts."""
        pairs = list(zip(values, counts))
        text = ", ".join(f"{self.describe(v)} ({int(c)} px)" for v, c in pairs[:limit])
        return text + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")

    def known_values(self) -> tuple[int, ...]:
        if self.known is not None:
            return self.known
        return tuple(range(max(self.mapping) + 1))

    def lut(self, space: str | LabelSpace = "cityscapes19") -> np.ndarray:
        """A uint8 table from raw values to ids in ``space`` (255 ignore, 254 unknown).

        It has 256 entries, or more when the table knows raw values above 255 (16-bit labels).
        """
        return _composed_lut(self, get_label_space(space).name)


@lru_cache(maxsize=64)
def _composed_lut(table: RawTable, space: str) -> np.ndarray:
    known = table.known_values()
    size = max(256, max(known) + 1, max(table.mapping) + 1)
    raw_to_target = np.full(size, UNKNOWN, np.int64)
    raw_to_target[list(known)] = IGNORE
    for raw, value in table.mapping.items():
        raw_to_target[raw] = value
    convert = conversion_lut(table.target, space).astype(np.int64)
    out = np.where(raw_to_target == UNKNOWN, UNKNOWN,
                   np.where(raw_to_target == IGNORE, IGNORE, convert[np.minimum(raw_to_target, 255)]))
    lut = out.astype(np.uint8)
    lut.setflags(write=False)
    return lut


def identity_table(space: str | LabelSpace) -> RawTable:
    """The table of labels already in ``space``: ids ``0..n-1`` and 255 are known."""
    space = get_label_space(space)
    n = space.num_classes
    return RawTable(space.name, space.name, {i: i for i in range(n)}, known=tuple(range(n)) + (IGNORE,),
                    description=f"labels already in {space.name}")
