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

import json
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
from .labels import IGNORE, UNKNOWN, LabelSpace, RawTable, get_label_space, identity_table


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
            listed = ", ".join(f"{int(v)} ({int(c)} px)" for v, c in list(zip(values, counts))[:8])
            if self.on_error != "skip":
                raise S2RError(
                    f"label {source} has raw values outside the {self.table.name} table: {listed}",
                    hint="check the dataset kind and its options; pass --on-error skip (?on_error=skip in the spec) "
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
    for note in layout.notes:
        warn(f"{text}: {note}")
    if "limit" in opts:
        samples = samples[: int(opts["limit"])]

    dataset = Dataset(parsed.kind, root, split, space, samples, table=layout.table, decode_label=layout.decode_label,
                      on_error=on_error, mismatch=mismatch, spec=text)
    if mismatch == "skip" and dataset.has_labels:
        _drop_mismatched(dataset)
    return dataset


def _drop_mismatched(dataset: Dataset) -> None:
    """Read every image and label header; leave out pairs whose sizes differ, and report them."""
    keep, dropped = [], []
    for sample in dataset.samples:
        if io.image_size(sample.image) == io.image_size(sample.label):
            keep.append(sample)
        else:
            dropped.append(sample.name)
    if dropped:
        examples = ", ".join(dropped[:3]) + (" ..." if len(dropped) > 3 else "")
        warn(f"{dataset.spec}: left out {len(dropped)} pair(s) whose label and image sizes differ: {examples}")
        dataset.samples = keep
        if not keep:
            raise S2RError(f"every pair of {dataset.spec} has a label of a different size than its image")
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



# --------------------------------------------------------------------------------------------------
# Published datasets, in their own on-disk layouts (DESIGN.md section 1, DATASETS.md)


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


CITYSCAPES_LAYOUT = ("PATH/leftImg8bit/<split>/<city>/*_leftImg8bit.png + "
                     "PATH/gtFine/<split>/<city>/*_gtFine_labelIds.png")


@register_adapter("cityscapes", layout=CITYSCAPES_LAYOUT, splits=("train", "val", "test"), default_split="train")
def _open_cityscapes(root: Path, split: str, options, space) -> Layout:
    from .tables import CITYSCAPES_LABEL_IDS

    layout = CITYSCAPES_LAYOUT.replace("<split>", split)
    image_dir = _need_dir(root / "leftImg8bit" / split, root, layout, inside=("leftImg8bit", "gtFine"))
    images = _stems(image_dir, (".png",), strip="_leftImg8bit", must_end="_leftImg8bit.png")
    if not images:
        raise S2RError(f"no *_leftImg8bit.png under {image_dir}", hint=f"expected {layout}")
    label_dir = root / "gtFine" / split
    if split == "test" or not label_dir.is_dir():
        note = ("Cityscapes test labels are withheld: reading images only" if split == "test"
                else f"no gtFine/{split}/ folder: reading images only")
        return Layout([Sample(n, p, None) for n, p in images.items()], notes=[note])
    labels = _stems(label_dir, (".png",), strip="_gtFine_labelIds", must_end="_gtFine_labelIds.png")
    samples, missing, orphans = pair_by_name(images, labels)
    return Layout(samples, CITYSCAPES_LABEL_IDS, io.read_index_label, missing, orphans)


GTA5_LAYOUT = "PATH/images/NNNNN.png + PATH/labels/NNNNN.png (palette PNGs, index = Cityscapes labelId)"


@register_adapter("gta5", layout=GTA5_LAYOUT)
def _open_gta5(root: Path, split, options, space) -> Layout:
    from .tables import CITYSCAPES_LABEL_IDS

    image_dir = _need_dir(root / "images", root, GTA5_LAYOUT, inside=("images", "labels"))
    label_dir = _need_dir(root / "labels", root, GTA5_LAYOUT)
    images, labels = _stems(image_dir, (".png",)), _stems(label_dir, (".png",))
    if not images:
        raise S2RError(f"no .png images under {image_dir}", hint=f"expected {GTA5_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)  # by name: some copies skip numbers
    # A few GTA5 pairs have an image and a label of different sizes: resize (reported) unless told otherwise.
    return Layout(samples, CITYSCAPES_LABEL_IDS, io.read_index_label, missing, orphans, mismatch_default="resize")


SYNSCAPES_LAYOUT = "PATH/img/rgb/N.png (or img/rgb-2k/) + PATH/img/class/N.png (Cityscapes labelIds) + PATH/meta/N.json"


@register_adapter("synscapes", layout=SYNSCAPES_LAYOUT,
                  options={"images": "rgb|rgb-2k: which image folder (default: rgb, else rgb-2k)"})
def _open_synscapes(root: Path, split, options, space) -> Layout:
    from .tables import CITYSCAPES_LABEL_IDS

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


SYNTHIA_LAYOUT = "PATH/RGB/NNNNNNN.png + PATH/GT/LABELS/NNNNNNN.png (16-bit, class id in the first channel)"


@register_adapter("synthia", layout=SYNTHIA_LAYOUT)
def _open_synthia(root: Path, split, options, space) -> Layout:
    from .tables import SYNTHIA

    image_dir = _need_dir(root / "RGB", root, SYNTHIA_LAYOUT, inside=("RGB", "GT"))
    label_dir = _need_dir(root / "GT" / "LABELS", root, SYNTHIA_LAYOUT, inside=("GT", "LABELS"))
    images, labels = _stems(image_dir, (".png",)), _stems(label_dir, (".png",))
    if not images:
        raise S2RError(f"no .png images under {image_dir}", hint=f"expected {SYNTHIA_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)
    # Pillow decodes these 16-bit 3-channel PNGs silently wrong; OpenCV reads them right.
    return Layout(samples, SYNTHIA, io.read_first_channel_16bit, missing, orphans)


MAPILLARY_LAYOUT = ("PATH/<split>/images/*.jpg + PATH/<split>/v1.2/labels/*.png (palette ids 0-65), "
                    "PATH/config_v1.2.json; split training|validation|testing")


@register_adapter("mapillary", layout=MAPILLARY_LAYOUT, splits=("training", "validation", "testing"),
                  default_split="training",
                  options={"mapping": "minimal|liberal: the 66 -> 19 class mapping (default minimal)"})
def _open_mapillary(root: Path, split: str, options, space) -> Layout:
    from .tables import MAPILLARY_TABLES, MAPILLARY_V12_CLASSES

    mapping = options.get("mapping", "minimal")
    if mapping not in MAPILLARY_TABLES:
        raise S2RError(f"mapping={mapping!r} is not one of {', '.join(MAPILLARY_TABLES)}")
    layout = MAPILLARY_LAYOUT.replace("<split>", split)
    config = root / "config_v1.2.json"
    notes = []
    if config.is_file():
        try:
            names = [entry["name"] for entry in json.loads(config.read_text())["labels"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise S2RError(f"cannot read {config}: {exc}") from None
        if tuple(names) != MAPILLARY_V12_CLASSES:
            raise S2RError(f"{config} lists {len(names)} classes that differ from Mapillary Vistas v1.2's 66",
                           hint="only the v1.2 label set is supported (v2.0 has 124 classes)")
    else:
        notes.append("no config_v1.2.json: assuming the v1.2 class ids")
    image_dir = _need_dir(root / split / "images", root, layout, inside=("training", "validation", "testing"))
    images = _stems(image_dir, io.IMAGE_SUFFIXES)
    if not images:
        raise S2RError(f"no images under {image_dir}", hint=f"expected {layout}")
    label_dir = root / split / "v1.2" / "labels"
    if not label_dir.is_dir() and (root / split / "labels").is_dir():
        label_dir = root / split / "labels"  # releases before v1.2 kept labels directly under the split
    if split == "testing" or not label_dir.is_dir():
        notes.append("no labels for this split: reading images only")
        return Layout([Sample(n, p, None) for n, p in images.items()], notes=notes)
    samples, missing, orphans = pair_by_name(images, _stems(label_dir, (".png",)))
    return Layout(samples, MAPILLARY_TABLES[mapping], io.read_index_label, missing, orphans, notes=notes)


CARLA_IMAGE_DIRS = ("rgb", "images", "CameraRGB")
CARLA_LABEL_DIRS = ("semantic", "semantic_segmentation", "labels", "CameraSemSeg")
CARLA_LAYOUT = ("PATH[/<episode>]/{rgb,images,CameraRGB}/*.png + the sibling {semantic,semantic_segmentation,labels,"
                "CameraSemSeg}/*.png: raw tags in the red channel, or CityScapesPalette colours")


@register_adapter("carla", layout=CARLA_LAYOUT,
                  options={"version": "0.9.13|0.9.14|auto: the semantic tag set (0.9.14 renumbered the tags)",
                           "labels": "raw|palette|auto: raw tags in the red channel, or CityScapesPalette colours"})
def _open_carla(root: Path, split, options, space) -> Layout:
    from .tables import CARLA_TABLES, UNKNOWN_COLOR, carla_color_table

    version = options.get("version", "auto")
    if version not in (*CARLA_TABLES, "auto"):
        raise S2RError(f"version={version!r} is not one of {', '.join(CARLA_TABLES)}, auto")
    kind = options.get("labels", "auto")
    if kind not in ("raw", "palette", "auto"):
        raise S2RError(f"labels={kind!r} is not one of raw, palette, auto")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for dirpath, dirnames, _files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        image_dir = next((here / d for d in CARLA_IMAGE_DIRS if d in dirnames), None)
        label_dir = next((here / d for d in CARLA_LABEL_DIRS if d in dirnames), None)
        if image_dir is None:
            continue
        prefix = "" if here == root else here.relative_to(root).as_posix() + "/"
        images.update({prefix + n: p for n, p in _stems(image_dir, (".png", ".jpg")).items()})
        if label_dir is not None:
            labels.update({prefix + n: p for n, p in _stems(label_dir, (".png",)).items()})
        dirnames[:] = [d for d in dirnames if d not in CARLA_IMAGE_DIRS + CARLA_LABEL_DIRS]
    if not images:
        raise S2RError(f"no CARLA camera folders under {root}", hint=f"expected {CARLA_LAYOUT}")
    samples, missing, orphans = pair_by_name(images, labels)
    probe = [s.label for s in samples if s.label is not None]
    probe = probe[:: max(1, len(probe) // 8)][:8]
    notes = []
    if kind == "auto" and probe:
        kind = "raw" if all(_looks_like_raw_tags(io.read_rgb_label(p)) for p in probe[:2]) else "palette"
    if kind == "palette":
        colors, table = carla_color_table(None if version == "auto" else version)
        return Layout(samples, table, ColorLabelDecoder(colors, UNKNOWN_COLOR), missing, orphans, notes=notes)
    if version == "auto" and probe:
        version, why = _detect_carla_version([io.read_red_channel(p) for p in probe])
        notes.append(f"read the labels as CARLA {version} tags ({why}); pass ?version= to choose")
    table = CARLA_TABLES["0.9.14" if version == "auto" else version]
    return Layout(samples, table, io.read_red_channel, missing, orphans, notes=notes)


class ColorLabelDecoder:
    """Decode a colour-coded label image to codes (a plain object, so datasets pickle to worker processes)."""

    def __init__(self, colors: Mapping[tuple[int, int, int], int], unknown: int):
        self.colors, self.unknown = dict(colors), unknown

    def __call__(self, path: Path) -> np.ndarray:
        return io.colors_to_ids(io.read_rgb_label(path), self.colors, self.unknown)


def _looks_like_raw_tags(rgb: np.ndarray) -> bool:
    """Raw semantic output: small tags in red, green and blue empty."""
    return int(rgb[..., 0].max()) <= 28 and not rgb[..., 1:].any()


def _detect_carla_version(tag_maps: list[np.ndarray]) -> tuple[str, str]:
    """Tell the two tag sets apart: tags above 22 exist only from 0.9.14; otherwise look at what is at
    the top of the frame (sky: 13 before 0.9.14, 11 after) and at the bottom (road: 7 before, 1 after)."""
    top = np.concatenate([m[: max(1, m.shape[0] // 20)].ravel() for m in tag_maps])
    bottom = np.concatenate([m[-max(1, m.shape[0] // 20):].ravel() for m in tag_maps])
    if max(int(m.max()) for m in tag_maps) > 22:
        return "0.9.14", "tags above 22 present"
    old = int((top == 13).sum() + (bottom == 7).sum())
    new = int((top == 11).sum() + (bottom == 1).sum())
    if old == new:
        raise S2RError("cannot tell which CARLA tag set these labels use",
                       hint="pass ?version=0.9.13 (tags 0-22) or ?version=0.9.14 (tags 0-28) in the spec")
    return ("0.9.13", "sky is tag 13 / road is tag 7") if old > new else ("0.9.14", "sky is tag 11 / road is tag 1")
