"""Dataset specs and adapters: every command that reads data goes through :func:`open_dataset`.

A spec is ``KIND:PATH[?key=value&...]``, e.g. ``cityscapes:/data/cityscapes?split=val`` or
``demo:demo?split=real``; a bare folder path means ``folder:PATH``. Each kind has an adapter,
registered with :func:`register_adapter`, that knows the dataset's on-disk layout, pairs images
with labels by name, and says how raw label values map into the common label space (a
:class:`~s2rcli.data.labels.RawTable`, applied on the fly as one lookup).

Options every kind accepts (in the spec's query or as keyword arguments of ``open_dataset``):

- ``split``: which split to read (the kind's default otherwise);
- ``on_error=fail|skip``: what to do with an image that has no label, or a label with raw values
  outside the table (``fail``, the default, stops with a one-line message naming the file; ``skip``
  leaves such images out, or maps the unknown values to 255, and reports them);
- ``mismatch=fail|resize|skip``: a label whose size differs from its image (resize = nearest);
  the default follows ``on_error``, except for GTA5 where it is ``resize``;
- ``limit=N``: keep only the first N samples (in name order).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import parse_qsl

import cv2
import numpy as np

from ..console import warn
from ..errors import S2RError
from . import io
from .labels import (
    IGNORE,
    UNKNOWN,
    LabelSpace,
    RawTable,
    get_label_space,
)


@dataclass(frozen=True)
class Sample:
    """One image and its label file; ``name`` is the relative stem used to mirror outputs."""

    name: str
    image: Path | None
    label: Path | None


@dataclass
class Layout:
    """What an adapter found on disk."""

    samples: list[Sample]
    table: RawTable | None = None
    """How raw label values map into a label space; None when the dataset has no labels."""
    decode_label: Callable[[Path], np.ndarray] = io.read_index_label
    missing_labels: list[str] = field(default_factory=list)
    """Names of images whose label file is missing (handled by ``on_error``)."""
    orphan_labels: int = 0
    """Label files with no image (reported, otherwise ignored)."""
    split: str | None = None
    mismatch_default: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Adapter:
    kind: str
    open: Callable[[Path, str | None, Mapping[str, str], LabelSpace], Layout]
    layout: str
    """The expected on-disk layout, quoted in hints when a folder does not match it."""
    splits: tuple[str, ...] = ()
    default_split: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    """Kind-specific options, name -> help text."""


COMMON_OPTIONS = {
    "split": "which split to read",
    "on_error": "fail|skip: images without labels, labels with unknown values",
    "mismatch": "fail|resize|skip: labels whose size differs from the image",
    "limit": "keep only the first N samples",
}

_ADAPTERS: dict[str, Adapter] = {}
_NOTES_SAID: set[tuple[str, str, str]] = set()
"""Adapter notes already shown in this process, as (kind, root, note)."""


def register_adapter(kind: str, *, layout: str = "", splits: tuple[str, ...] = (), default_split: str | None = None,
                     options: Mapping[str, str] | None = None):
    """Register ``func(root, split, options, space) -> Layout`` as the adapter for ``kind``.

    >>> @register_adapter("mykind", layout="PATH/rgb/*.png + PATH/ids/*.png")
    ... def _open_mykind(root, split, options, space): ...
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise ValueError(f"adapter kind must be lower-case letters, digits and _: {kind!r}")
    if kind in _ADAPTERS:
        raise ValueError(f"adapter {kind!r} is already registered")
    clash = set(options or ()) & set(COMMON_OPTIONS)
    if clash:
        raise ValueError(f"adapter {kind!r} redefines common options {sorted(clash)}")

    def decorate(func):
        _ADAPTERS[kind] = Adapter(kind, func, layout or kind, tuple(splits), default_split, dict(options or {}))
        return func

    return decorate


def list_adapters() -> list[str]:
    return list(_ADAPTERS)


def get_adapter(kind: str) -> Adapter:
    if kind not in _ADAPTERS:
        raise S2RError(f"unknown dataset kind {kind!r}", hint="valid kinds: " + ", ".join(_ADAPTERS))
    return _ADAPTERS[kind]


@dataclass(frozen=True)
class Spec:
    kind: str
    path: Path
    options: Mapping[str, str]

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind}:{self.path}" + (f"?{query}" if query else "")


_KIND_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*):(?![\\/]{2})(.*)$", re.S)


def parse_spec(spec: str) -> Spec:
    """Split ``KIND:PATH[?key=value&...]``; a bare folder path (no ``KIND:``) means ``folder:PATH``.

    >>> parse_spec("cityscapes:/data/cs?split=val")
    Spec(kind='cityscapes', path=PosixPath('/data/cs'), options={'split': 'val'})
    """
    text = str(spec).strip()
    if not text:
        raise S2RError("empty dataset spec", hint="write KIND:PATH, e.g. demo:demo?split=synthetic")
    match = _KIND_RE.match(text)
    if match and not (len(match.group(1)) == 1 and os.name == "nt"):  # C:\data is a path, not a kind
        kind, rest = match.group(1).lower(), match.group(2)
    else:
        kind, rest = None, text
    path_text, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in options:
            raise S2RError(f"option {key!r} given twice in dataset spec {spec!r}")
        options[key] = value
    if kind is None:
        path = Path(path_text).expanduser()
        if not path.is_dir():
            raise S2RError(f"not a dataset spec or folder: {spec!r}",
                           hint="write KIND:PATH[?split=...] with KIND one of " + ", ".join(_ADAPTERS)
                                + ", or give an existing folder of images/ (+ labels/)")
        kind = "folder"
    if kind not in _ADAPTERS:
        raise S2RError(f"unknown dataset kind {kind!r} in spec {spec!r}", hint="valid kinds: " + ", ".join(_ADAPTERS))
    if not path_text:
        raise S2RError(f"dataset spec {spec!r} has no path", hint=f"write {kind}:PATH")
    return Spec(kind, Path(path_text).expanduser(), options)


class Dataset:
    """Images paired with labels, read on demand; labels come out in the common label space.

    Build one with :func:`open_dataset`. ``read_image(i)`` gives HxWx3 uint8 RGB; ``read_label(i)``
    gives HxW uint8 ids in ``space`` (255 = ignore).
    """

    def __init__(self, kind: str, root: Path, split: str | None, space: LabelSpace, samples: list[Sample], *,
                 table: RawTable | None = None, decode_label: Callable[[Path], np.ndarray] = io.read_index_label,
                 on_error: str = "fail", mismatch: str = "fail", spec: str | None = None):
        self.kind, self.root, self.split, self.space = kind, Path(root), split, space
        self.samples = list(samples)
        self.table = table
        self.decode_label = decode_label
        self.on_error, self.mismatch = on_error, mismatch
        self.spec = spec or f"{kind}:{root}" + (f"?split={split}" if split else "")
        self.unknown_pixels: Counter[int] = Counter()
        """Pixels with raw values outside the table seen so far (with ``on_error=skip``), per value."""
        self.resized_labels: list[str] = []
        """Names of samples whose label was resized to its image (``mismatch=resize``)."""
        self.skipped_mismatched: list[str] = []
        """Names left out because label and image sizes differ (``mismatch=skip``)."""
        self.skipped_unreadable: list[str] = []
        """Names left out when opened because a file could not be read (``on_error=skip``)."""
        self.warn_each = True
        """Warn about each repaired file as it is read (bulk commands turn this off and report at the end)."""
        self._lut = table.lut(space) if table is not None else None
        # Fast path: raw values up to ``_known_prefix`` are all known (so no unknown check is needed),
        # and when the table maps each of them to itself, the lookup can be skipped altogether.
        self._known_prefix, self._identity = -1, False
        if table is not None:
            known = set(table.known_values())
            while self._known_prefix + 1 in known:
                self._known_prefix += 1
            prefix = np.arange(self._known_prefix + 1)
            self._identity = bool(np.array_equal(self._lut[prefix], prefix))
        self._warned: set[str] = set()
        self._image_sizes: dict[Path, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"Dataset({self.spec!r}, {len(self)} samples, space={self.space.name}, labels={self.has_labels})"

    @property
    def names(self) -> list[str]:
        return [sample.name for sample in self.samples]

    @property
    def has_labels(self) -> bool:
        return self.table is not None and bool(self.samples) and all(s.label is not None for s in self.samples)

    @property
    def lut(self) -> np.ndarray | None:
        """The raw value -> ``space`` lookup table (255 ignore, 254 unknown), or None without labels."""
        return self._lut

    def read_image(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        if sample.image is None:
            raise S2RError(f"{self.spec}: sample {sample.name} has no image")
        return io.read_image(sample.image)

    def read_raw_label(self, i: int) -> np.ndarray:
        """The label file's stored values, before any mapping."""
        sample = self.samples[i]
        if self.table is None or sample.label is None:
            raise S2RError(f"{self.spec} has no labels", hint="this command needs a labelled dataset")
        return self.decode_label(sample.label)

    def read_label(self, i: int) -> np.ndarray:
        """HxW uint8 label map in ``space`` (255 = ignore), at the size of the image."""
        return self.read_label_report(i)[0]

    def read_label_report(self, i: int) -> tuple[np.ndarray, dict[int, int], bool]:
        """``read_label`` plus what happened on the way: unknown raw values (pixels per value, with
        ``on_error=skip``) and whether the label was resized to its image."""
        raw = self.read_raw_label(i)
        label, unknown = self._map(raw, self.samples[i].label)
        label, resized = self._fit_to_image(i, label)
        return label, unknown, resized

    def map_raw(self, raw: np.ndarray, source: Path | str | None = None) -> np.ndarray:
        """Map raw values through the table; unknown values fail or become 255 (``on_error``)."""
        return self._map(raw, source)[0]

    def _map(self, raw: np.ndarray, source: Path | str | None) -> tuple[np.ndarray, dict[int, int]]:
        lut = self._lut
        top = int(raw.max(initial=0))
        if raw.dtype != np.uint8 and lut.shape[0] == 256 and top < 256:
            raw = raw.astype(np.uint8)  # e.g. SYNTHIA's 16-bit ids: all small, so the fast path applies
        if top <= self._known_prefix:  # every value is known: no unknown check
            if self._identity:
                return (raw if raw.flags.writeable and raw.dtype == np.uint8 else raw.astype(np.uint8)), {}
            if raw.dtype == np.uint8 and lut.shape[0] == 256:
                return cv2.LUT(raw, lut), {}
            return lut[raw], {}
        if raw.dtype == np.uint8 and lut.shape[0] == 256:
            label = cv2.LUT(raw, lut)  # several times faster than numpy fancy indexing
        elif top < lut.shape[0]:
            label = lut[raw]
        else:
            label = lut[np.minimum(raw, lut.shape[0] - 1)]
            label[raw >= lut.shape[0]] = UNKNOWN
        unknown = label == UNKNOWN
        if unknown.any():
            values, counts = np.unique(raw[unknown], return_counts=True)
            listed = self.table.describe_counts(values, counts)  # the values the file holds, as it holds them
            if self.on_error != "skip":
                raise S2RError(
                    f"label {source} has raw values outside the {self.table.name} table: {listed}",
                    hint=(self.table.hint + "; " if self.table.hint else "")
                    + "check the dataset kind and its options; pass --on-error skip (?on_error=skip in the spec) "
                      "to map them to ignore (255) and report them")
            found = {int(v): int(c) for v, c in zip(values, counts)}
            self.unknown_pixels.update(found)
            label[unknown] = IGNORE
            self._warn_once(str(source), f"label {source}: raw values outside the {self.table.name} table "
                                         f"mapped to ignore: {listed}")
            return label, found
        return label, {}

    def _fit_to_image(self, i: int, label: np.ndarray) -> tuple[np.ndarray, bool]:
        sample = self.samples[i]
        if sample.image is None:
            return label, False
        size = self._image_sizes.get(sample.image)
        if size is None:  # a header read; cached, as training reads each sample many times
            size = self._image_sizes[sample.image] = io.image_size(sample.image)
        height, width = size
        if label.shape == (height, width):
            return label, False
        message = (f"label {sample.label} is {label.shape[1]}x{label.shape[0]} but image {sample.image} "
                   f"is {width}x{height}")
        if self.mismatch == "resize":
            self._warn_once(sample.name, message + "; resized the label (nearest)")
            if sample.name not in self.resized_labels:
                self.resized_labels.append(sample.name)
            return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST), True
        raise S2RError(message, hint="pass ?mismatch=resize (nearest) or ?mismatch=skip in the spec")

    def _warn_once(self, key: str, message: str) -> None:
        if self.warn_each and key not in self._warned:
            self._warned.add(key)
            warn(message)

    def summary(self) -> dict:
        """Counts for reports and manifests."""
        return {"spec": self.spec, "kind": self.kind, "root": str(self.root), "split": self.split,
                "space": self.space.name, "samples": len(self), "labels": self.has_labels}


def _parse_options(adapter: Adapter, spec: Spec, overrides: Mapping[str, object]) -> dict[str, str]:
    options = dict(spec.options)
    for key, value in overrides.items():
        if value is not None:
            options[key] = str(value)
    valid = {**COMMON_OPTIONS, **adapter.options}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise S2RError(f"unknown option(s) {', '.join(unknown)} for dataset kind {adapter.kind}",
                       hint="valid options: " + ", ".join(f"{k} ({v})" for k, v in valid.items()))
    for key, choices in (("on_error", ("fail", "skip")), ("mismatch", ("fail", "resize", "skip"))):
        if key in options and options[key] not in choices:
            raise S2RError(f"{key}={options[key]!r} is not one of {', '.join(choices)}")
    if "limit" in options:
        try:
            if int(options["limit"]) < 1:
                raise ValueError
        except ValueError:
            raise S2RError(f"limit={options['limit']!r} is not a positive integer") from None
    if adapter.splits and "split" in options and options["split"] not in adapter.splits:
        raise S2RError(f"split {options['split']!r} is not a {adapter.kind} split",
                       hint="valid splits: " + ", ".join(adapter.splits))
    if not adapter.splits and options.get("split"):
        raise S2RError(f"dataset kind {adapter.kind} has no splits", hint="point the spec at the folder itself")
    return options


def open_dataset(spec: str | Spec, space: str | LabelSpace = "cityscapes19", **options) -> Dataset:
    """Open a dataset spec; labels are mapped into ``space`` on the fly.

    >>> ds = open_dataset("gta5:/data/gta5", mismatch="skip")
    >>> image, label = ds.read_image(0), ds.read_label(0)   # HxWx3 uint8, HxW uint8 trainIds

    Keyword options override those in the spec's query (``split``, ``on_error``, ``mismatch``,
    ``limit`` and the kind's own); ``None`` values are ignored.
    """
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    adapter = get_adapter(parsed.kind)
    opts = _parse_options(adapter, parsed, options)
    space = get_label_space(space)
    root = parsed.path
    if not root.exists():
        raise S2RError(f"dataset folder not found: {root}", hint=f"expected {adapter.layout}")
    if not root.is_dir():
        raise S2RError(f"dataset path is not a folder: {root}", hint=f"expected {adapter.layout}")
    split = opts.get("split") or adapter.default_split
    layout = adapter.open(root, split, opts, space)
    split = layout.split if layout.split is not None else split
    on_error = opts.get("on_error", "fail")
    mismatch = opts.get("mismatch") or layout.mismatch_default or ("skip" if on_error == "skip" else "fail")
    text = str(Spec(parsed.kind, root, opts))

    samples = sorted(layout.samples, key=lambda s: s.name)
    if not samples:
        raise S2RError(f"no images found for {text}", hint=f"expected {adapter.layout}")
    if layout.missing_labels:
        missing = sorted(layout.missing_labels)
        examples = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        if on_error != "skip":
            raise S2RError(f"{len(missing)} image(s) of {text} have no label file: {examples}",
                           hint=f"expected {adapter.layout}; pass --on-error skip (?on_error=skip) to leave them out")
        warn(f"{text}: left out {len(missing)} image(s) with no label file: {examples}")
        dropped = set(missing)
        samples = [s for s in samples if s.name not in dropped]
        if not samples:
            raise S2RError(f"no image of {text} has a label file", hint=f"expected {adapter.layout}")
    if layout.orphan_labels:
        warn(f"{text}: ignored {layout.orphan_labels} label file(s) with no image")
    for note in layout.notes:  # once per dataset and process, however often it is opened
        if (parsed.kind, str(root), note) not in _NOTES_SAID:
            _NOTES_SAID.add((parsed.kind, str(root), note))
            warn(f"{text}: {note}")
    if "limit" in opts:
        samples = samples[: int(opts["limit"])]

    dataset = Dataset(parsed.kind, root, split, space, samples, table=layout.table, decode_label=layout.decode_label,
                      on_error=on_error, mismatch=mismatch, spec=text)
    if mismatch == "skip" and dataset.has_labels:
        _drop_mismatched(dataset)
    return dataset


def _drop_mismatched(dataset: Dataset) -> None:
    """Read every image and label header; leave out pairs whose sizes differ, and report them.
    With ``on_error=skip``, a file whose header cannot be read (empty, not an image) is left out too."""
    keep, dropped, unreadable = [], [], []
    for sample in dataset.samples:
        try:
            same = io.image_size(sample.image) == io.image_size(sample.label)
        except S2RError as exc:
            if dataset.on_error != "skip":
                raise
            unreadable.append(f"{sample.name} ({exc.message})")
            dataset.skipped_unreadable.append(sample.name)
            continue
        if same:
            keep.append(sample)
        else:
            dropped.append(sample.name)
    if unreadable:
        examples = ", ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else "")
        warn(f"{dataset.spec}: left out {len(unreadable)} unreadable sample(s) (on_error=skip): {examples}")
    if dropped:
        examples = ", ".join(dropped[:3]) + (" ..." if len(dropped) > 3 else "")
        warn(f"{dataset.spec}: left out {len(dropped)} pair(s) whose label and image sizes differ: {examples}")
    if dropped or unreadable:
        dataset.samples = keep
        if not keep:
            raise S2RError(f"no sample of {dataset.spec} is left: {len(unreadable)} unreadable, {len(dropped)} with "
                           "a label of a different size than its image",
                           hint="check the files named in the warnings above, or the dataset spec")
    dataset.skipped_mismatched = dropped


# --------------------------------------------------------------------------------------------------
# Layout helpers


def _rel_stem(path: Path, base: Path, strip: str = "") -> str:
    rel = path.relative_to(base).with_suffix("").as_posix()
    if strip and rel.endswith(strip):
        rel = rel[: -len(strip)]
    return rel


def list_files(folder: Path, suffixes: tuple[str, ...] = io.IMAGE_SUFFIXES, recursive: bool = True) -> list[Path]:
    """Files under ``folder`` with one of the suffixes (case-insensitive), skipping hidden ones."""
    if not folder.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]:
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(suffixes):
                found.append(Path(dirpath) / name)
    return sorted(found)


def pair_by_name(images: Mapping[str, Path], labels: Mapping[str, Path], *, need_labels: bool = True
                 ) -> tuple[list[Sample], list[str], int]:
    """Pair images and labels that share a name; returns samples, images without label, orphan labels."""
    samples, missing = [], []
    for name, image in images.items():
        label = labels.get(name)
        if label is None and need_labels:
            missing.append(name)
        samples.append(Sample(name, image, label))
    orphans = sum(1 for name in labels if name not in images)
    return samples, missing, orphans


def _duplicates_check(paths: list[Path], base: Path, what: str) -> dict[str, Path]:
    by_name: dict[str, Path] = {}
    for path in paths:
        name = _rel_stem(path, base)
        if name in by_name:
            raise S2RError(f"two {what} files share the name {name!r}: {by_name[name].name} and {path.name}",
                           hint="keep one of them")
        by_name[name] = path
    return by_name


def _images_and_labels(image_dir: Path, label_dir: Path | None, table: RawTable | None, *,
                       layout: str, label_suffixes: tuple[str, ...] = (".png",)) -> Layout:
    """The generic ``images/`` + ``labels/`` layout (folder, demo, remap outputs)."""
    images = _duplicates_check(list_files(image_dir), image_dir, "image")
    if not images:
        raise S2RError(f"no images (.png/.jpg) under {image_dir}", hint=f"expected {layout}")
    if label_dir is None or table is None:
        return Layout([Sample(n, p, None) for n, p in images.items()])
    labels = _duplicates_check(list_files(label_dir, label_suffixes), label_dir, "label")
    samples, missing, orphans = pair_by_name(images, labels)
    return Layout(samples, table, io.read_index_label, missing, orphans)


# --------------------------------------------------------------------------------------------------
# Built-in adapters: folder and demo


def _need_dir(folder: Path, root: Path, layout: str, inside: tuple[str, ...] = ()) -> Path:
    """``folder`` must exist; otherwise explain the expected layout (and spot a spec one level too deep)."""
    if folder.is_dir():
        return folder
    hint = f"expected {layout}"
    if root.name in inside:
        hint += f"; the spec should point at the folder that holds {root.name}/, i.e. {root.parent}"
    elif folder.parent.is_dir() and folder.parent != root:
        present = sorted(p.name for p in folder.parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        if present:
            hint += f"; found {folder.parent.name}/ with: {', '.join(present[:8])}"
    raise S2RError(f"{folder} not found", hint=hint)


def _stems(folder: Path, suffixes: tuple[str, ...], strip: str = "", must_end: str = "") -> dict[str, Path]:
    found = {}
    for path in list_files(folder, suffixes):
        if must_end and not path.name.endswith(must_end):
            continue
        name = _rel_stem(path, folder, strip)
        if name in found:
            raise S2RError(f"two files share the name {name!r}: {found[name]} and {path}", hint="keep one of them")
        found[name] = path
    return found


# Register the built-in adapters (after everything they import from this module is defined).
from . import adapters  # noqa: E402,F401
