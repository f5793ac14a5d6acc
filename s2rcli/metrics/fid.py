"""FID and KID through torch-fidelity 0.4.0, with a fixed, documented protocol.

Protocol (every number ``s2r fid`` prints follows it):

1. Each image is read as 8-bit RGB by its dataset adapter and resized with PIL
   bicubic to ``size`` (default 256x512, H x W, the 2:1 driving aspect of paper
   001), never cropped; it enters the extractor as a uint8 ``3xHxW`` tensor.
   torch-fidelity's own ``samples_resize_and_crop`` is not used (it crops 2:1
   frames to squares).
2. Features come from a torch-fidelity feature extractor created through its
   registry: ``inception-v3-compat`` (layer ``2048``, its TF-compatible Inception
   that resizes to 299x299 internally) with weights resolved by
   :func:`s2rcli.pretrained.resolve_weights`, or, when asked for explicitly,
   ``s2r-random-features``: a small, randomly initialised convolutional network
   with a fixed seed, for offline smoke tests. Its numbers are labelled "random
   features; not comparable to papers".
3. FID and KID are torch-fidelity's formulas applied to those features
   (``fid_features_to_statistics`` / ``fid_statistics_to_metric`` and
   ``kid_features_to_metric`` with its polynomial kernel, 100 subsets and seed 2020).

The extractor runs in eval mode, so an image's features depend on that image
alone and the result does not depend on the batch size (a test checks it).
Features are cached per input, so a second run against the same reference is
instant.
The cache key hashes the sorted ``(name, size, mtime)`` of the input's files,
the resize protocol and the extractor with its weights: changing a file,
the size or the weights computes afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ..console import track, warn
from ..data.datasets import Dataset, Sample, list_files, open_dataset
from ..data.labels import get_label_space
from ..errors import S2RError
from ..pretrained import resolve_weights, safe_load_weights, weights_only_loads
from ..utils import sizes
from ..utils.atomic import atomic_path

DEFAULT_SIZE = (256, 512)
RESIZE_PROTOCOL = "pil-bicubic-uint8"
CACHE_VERSION = 1
RANDOM = "random"
INCEPTION = "inception-v3-compat"
RANDOM_FEATURES = "s2r-random-features"
RANDOM_LABEL = "random features; not comparable to papers"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020
MIN_IMAGES = 2
"""FID needs a mean and a covariance on each side: at least 2 images (a set with fewer is skipped)."""


# --- the offline fallback extractor ------------------------------------------------


# torch-fidelity is imported inside the functions that use it: importing it takes about 3 s (it pulls
# in scipy and its extractors), which every other s2r command, `--help` included, would otherwise pay.


def _random_features_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class RandomFeatures(FeatureExtractorBase):
        """A fixed-seed random conv net: 4 stages (16, 32, 64, 128 channels), each
        globally average-pooled and concatenated into 240 features.

        Random convolutions respond to colour, texture and edge statistics, so the
        distance still orders sets by appearance, but its scale means nothing next
        to Inception FID. The seed is fixed, so results are reproducible.
        """

        FEATURES = ("240",)

        def __init__(self, name: str, features_list: Sequence[str], seed: int = 0, **kwargs: Any):
            super().__init__(name, features_list)
            gen = torch.Generator().manual_seed(int(seed))
            chans = (3, 16, 32, 64, 128)
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
            with torch.no_grad():
                for conv in self.convs:
                    fan_in = conv.in_channels * 9
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                    conv.bias.zero_()
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return RandomFeatures.FEATURES

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "240"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

        def forward(self, x: torch.Tensor):
            if x.dtype != torch.uint8:
                raise TypeError("expecting uint8 images")
            x = x.float() / 127.5 - 1.0
            pooled = []
            for conv in self.convs:
                x = F.relu(conv(x))
                pooled.append(x.mean(dim=(2, 3)))
            return (torch.cat(pooled, 1),)

    return RandomFeatures


def _register_builtin_extractors() -> None:
    from torch_fidelity.registry import (
        FEATURE_EXTRACTORS_REGISTRY,
        register_feature_extractor,
    )

    if RANDOM_FEATURES not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(RANDOM_FEATURES, _random_features_class())


# --- which extractor ----------------------------------------------------------------


@dataclass(frozen=True)
class Extractor:
    """A torch-fidelity feature extractor and the weights it uses.

    Attributes:
        name: torch-fidelity registry name.
        layer: the feature layer used for FID/KID.
        weights_path: passed as ``feature_extractor_weights_path`` (``None``: none needed).
        weights_id: identifies the weights in the cache key.
        label: how results are labelled for humans.
        comparable: whether numbers are comparable to published (Inception) FIDs.
    """

    name: str
    layer: str
    weights_path: str | None = None
    weights_id: str = ""
    label: str = ""
    comparable: bool = False
    kwargs: tuple[tuple[str, Any], ...] = ()

    def create(self, device: torch.device) -> nn.Module:
        from torch_fidelity.utils import create_feature_extractor

        _register_builtin_extractors()
        kwargs: dict[str, Any] = dict(self.kwargs)
        if self.weights_path is not None:
            # torch-fidelity loads the file with weights_only=False: check it safely first
            # (a clear error), and force every load inside its constructor to be weights-only.
            safe_load_weights("inception-fid" if self.name == INCEPTION else self.name, self.weights_path)
            kwargs["feature_extractor_weights_path"] = self.weights_path
        with contextlib.redirect_stdout(sys.stderr), weights_only_loads():  # it prints notes to stdout
            try:
                net = create_feature_extractor(self.name, [self.layer], cuda=False, verbose=False, **kwargs)
            except pickle.UnpicklingError as exc:
                raise S2RError(f"the {self.name} weights hold objects other than tensors; s2r does not run code "
                               "from weight files", hint="use the original weight file") from exc
        return net.to(device)


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def inception_extractor(weights: str | os.PathLike | None = None) -> Extractor:
    """torch-fidelity's Inception-v3 with weights from ``--inception-weights PATH``,
    the local cache, or a download (a clear one-line error offline)."""
    path = resolve_weights("inception-fid", weights)
    if path is None:  # cannot happen for an explicit path; guards "random" reaching here
        raise S2RError("Inception FID needs real weights", hint="use --inception-weights random for random features")
    return Extractor(INCEPTION, "2048", str(path), _file_id(Path(path)), "Inception-v3 (torch-fidelity)", True)


def random_extractor(seed: int = 0) -> Extractor:
    """The fixed-seed random conv features: for offline smoke tests, never for papers."""
    return Extractor(RANDOM_FEATURES, "240", None, f"seed={seed}", RANDOM_LABEL, False, (("seed", int(seed)),))


def resolve_extractor(choice: str | os.PathLike | None) -> Extractor:
    """``"random"`` -> random features; a path or ``None`` -> Inception (cache, then download)."""
    if choice is not None and str(choice) == RANDOM:
        return random_extractor()
    return inception_extractor(choice)


def registered_extractor(name: str, layer: str, **kwargs: Any) -> Extractor:
    """Any feature extractor registered with torch-fidelity (``register_feature_extractor``)."""
    return Extractor(name, layer, None, json.dumps(kwargs, sort_keys=True, default=str), name, False,
                     tuple(sorted(kwargs.items())))


# --- inputs --------------------------------------------------------------------------


def _folder_path(spec: str) -> Path | None:
    """The folder of a bare path or a plain ``folder:PATH`` spec (no options); else None."""
    if spec.startswith("folder:") and "?" not in spec:
        return Path(spec[len("folder:"):]).expanduser()
    if re.match(r"^[A-Za-z][A-Za-z0-9_]*:(?![\\/]{2})", spec):
        return None
    return Path(spec).expanduser()


def open_image_set(spec: str):
    """Every image of a folder (or ``folder:PATH``), labels ignored.

    Generated outputs are image sets even where their names do not pair with label files.
    A folder with ``images/`` inside, or with images directly in it, is read by the folder
    adapter; a folder whose images sit only in subfolders (Cityscapes ``leftImg8bit/val/<city>/``)
    is searched recursively, and each image is named by its path relative to the folder.
    """
    root = _folder_path(spec)
    if root is None:
        raise S2RError(f"{spec} is not a folder", hint="pass a folder of images")
    if not root.is_dir():
        raise S2RError(f"no such folder: {root}", hint="pass a folder of images (or PATH with images/ inside)")
    if not (root / "images").is_dir() and not _image_files(root, recursive=False):
        return _nested_image_set(root)
    return open_dataset(f"folder:{root}?labels=none")


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    return list_files(folder, recursive=recursive)


def _nested_image_set(root: Path):
    """All images under ``root`` at any depth (hidden files and a top-level ``labels/`` left out),
    named by their relative path without suffix (``frankfurt/frankfurt_000000_000294_leftImg8bit``)."""
    labels = root / "labels"
    paths = [p for p in _image_files(root, recursive=True) if labels not in p.parents]
    if not paths:
        raise S2RError(f"no images (.png/.jpg) in {root} or its subfolders", hint="pass a folder of images")
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    counts = Counter(stems)  # a.png and a.jpg side by side keep their suffixes to stay apart
    clashing = {stem for stem, n in counts.items() if n > 1}
    names = [p.relative_to(root).as_posix() if stem in clashing else stem for p, stem in zip(paths, stems)]
    samples = sorted((Sample(name, path, None) for name, path in zip(names, paths)), key=lambda s: s.name)
    return Dataset("folder", root, None, get_label_space("cityscapes19"), samples, spec=f"folder:{root}")


def open_images(spec: str):
    """Images to measure: a folder (labels ignored) or any dataset spec."""
    if _folder_path(spec) is not None:
        return open_image_set(spec)
    dataset = open_dataset(spec)
    if any(s.image is None for s in dataset.samples):
        raise S2RError(f"{spec} has samples without images", hint="FID needs images")
    return dataset


def parse_size(text: str | Sequence[int] | None, default: tuple[int, int] | None = DEFAULT_SIZE) -> tuple[int, int] | None:
    """``"256x512"`` (H x W) -> ``(256, 512)``; the FID default size when none is given."""
    return sizes.parse_size(text, default)


def load_resized(dataset, index: int, size: tuple[int, int]) -> torch.Tensor:
    """Image ``index`` as a uint8 ``3xHxW`` tensor, PIL-bicubic resized to ``size``."""
    array = dataset.read_image(index)
    image = Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8))
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


# --- cache ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("S2R_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "s2r")
    return Path(base).expanduser() / "fid"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(dataset, size: tuple[int, int], extractor: Extractor) -> tuple[str, str]:
    """``(source, content)`` hashes: the source names the input, protocol and
    extractor; the content hashes the sorted ``(name, size, mtime)`` of its files."""
    source = _hash({
        "version": CACHE_VERSION,
        "kind": getattr(dataset, "kind", ""),
        "root": str(Path(getattr(dataset, "root", "")).resolve()),
        "split": getattr(dataset, "split", None),
        "resize": [RESIZE_PROTOCOL, list(size)],
        "extractor": [extractor.name, extractor.layer, extractor.weights_id],
    })
    files = []
    for sample in dataset.samples:
        path = Path(sample.image)
        st = path.stat()
        files.append((sample.name, st.st_size, st.st_mtime_ns))
    return source, _hash(sorted(files))


def _cache_file(cache_dir: Path, source: str, content: str) -> Path:
    return cache_dir / f"{source[:16]}-{content[:16]}.npz"


# --- features and metrics -----------------------------------------------------------


@torch.no_grad()
def compute_features(
    dataset,
    extractor: Extractor,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    description: str = "features",
    net: nn.Module | Callable[[], nn.Module] | None = None,
) -> np.ndarray:
    """``N x D`` float32 features of every image of ``dataset`` (cached when ``cache_dir`` is set)."""

    cache_path = None
    if cache_dir is not None:
        source, content = cache_key(dataset, size, extractor)
        cache_path = _cache_file(Path(cache_dir), source, content)
        if cache_path.is_file():
            try:
                with np.load(cache_path) as data:
                    return data["features"].astype(np.float32)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is recomputed
    device = torch.device(device)
    if net is None:
        net = extractor.create(device)
    elif not isinstance(net, nn.Module):
        net = net()  # a factory: the extractor is built only when something is not cached
    n = len(dataset)
    chunks = []
    starts = range(0, n, max(1, int(batch_size)))
    for start in track(starts, total=len(starts), description=description):
        batch = torch.stack([load_resized(dataset, i, size) for i in range(start, min(n, start + batch_size))])
        features = net(batch.to(device))
        out = net.convert_features_tuple_to_dict(features)[extractor.layer]
        chunks.append(out.detach().float().cpu())
    features = torch.cat(chunks).numpy().astype(np.float32)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in cache_path.parent.glob(f"{source[:16]}-*.npz"):  # older contents of the same input
            if stale != cache_path:
                with contextlib.suppress(OSError):
                    stale.unlink()
        with atomic_path(cache_path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, features=features, size=np.asarray(size), count=n)
    return features


def fid_from_features(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """torch-fidelity's Frechet distance between the Gaussian fits of two feature sets."""
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    if len(features_1) < 2 or len(features_2) < 2:
        raise S2RError("FID needs at least 2 images on each side")
    s1 = fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(features_1)))
    s2 = fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(features_2)))
    return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])


def kid_from_features(
    features_1: np.ndarray,
    features_2: np.ndarray,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = KID_SEED,
) -> dict[str, float]:
    """torch-fidelity's KID (polynomial kernel); the subset size shrinks to the smaller set.

    ``kid_std`` is the spread over the random subsets, so it means something only when the
    subsets can differ: when both sets hold more images than the subset size. Otherwise every
    subset of a set is the whole set, and ``kid_std`` is ``None`` (shown as n/a), not a
    misleading 0.
    """
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    subset_size = min(int(subset_size), len(features_1), len(features_2))
    if subset_size < 2:
        raise S2RError("KID needs at least 2 images on each side")
    std_defined = subset_size < min(len(features_1), len(features_2))
    with contextlib.redirect_stdout(sys.stderr):  # its "KID values slightly less than 0" note
        out = kid_features_to_metric(
            torch.from_numpy(np.ascontiguousarray(features_1)),
            torch.from_numpy(np.ascontiguousarray(features_2)),
            kid_subsets=int(subsets),
            kid_subset_size=subset_size,
            rng_seed=int(seed),
            verbose=False,
        )
    return {"kid_mean": float(out[KEY_METRIC_KID_MEAN]),
            "kid_std": float(out[KEY_METRIC_KID_STD]) if std_defined else None,
            "kid_subset_size": subset_size}


def compare(
    inputs: str,
    references: Sequence[tuple[str, str]],
    *,
    extractor: Extractor | None = None,
    inception_weights: str | os.PathLike | None = None,
    kid: bool = False,
    size: tuple[int, int] = DEFAULT_SIZE,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """FID (and KID) of one image set against one or more references.

    Args:
        inputs: the set under test (folder or dataset spec).
        references: ``(label, spec)`` pairs, e.g. ``[("real", "demo:w?split=real"),
            ("synthetic", "demo:w?split=synthetic")]`` (UNIT + smart batch, Table 4).
        extractor: a resolved feature extractor; by default
            ``resolve_extractor(inception_weights)``, after the inputs are checked,
            so a wrong path is reported before any weights are looked for.

    Returns a JSON-ready dict: the protocol (with the extractor's ``feature_dim``), the input,
    one result per reference that could be compared, ``skipped``: the references left out
    (fewer than 2 images: FID needs a covariance), each with its count and reason, and
    ``warnings``: what was also printed (a set smaller than the feature dimension gives a
    biased FID; KID's spread n/a). A set under test that is too small is an error.
    """
    if not references:
        raise S2RError("nothing to compare against", hint="give a second set, or --real / --synthetic / --also")
    device = torch.device(device)
    datasets = {"input": open_images(inputs)}
    for label, spec in references:
        datasets[label] = open_images(spec)
    n_input = len(datasets["input"])
    if n_input < MIN_IMAGES:
        raise S2RError(f"the set under test {inputs} has {n_input} image(s); FID needs at least {MIN_IMAGES}",
                       hint="pass a folder or spec with more images")
    skipped = [{"reference": label, "spec": spec, "count": len(datasets[label]),
                "reason": f"{len(datasets[label])} image(s); FID needs at least {MIN_IMAGES}"}
               for label, spec in references if len(datasets[label]) < MIN_IMAGES]
    if len(skipped) == len(references):
        names = ", ".join(f"{_named(s['reference'], s['spec'])} ({s['count']})" for s in skipped)
        raise S2RError(f"no reference can be compared: every one has fewer than {MIN_IMAGES} images: {names}",
                       hint="pass reference sets with at least 2 images (FID needs a covariance on each side)")
    for entry in skipped:  # the others are still compared
        warn(f"skipped reference {_named(entry['reference'], entry['spec'])}: {entry['reason']}")
    if extractor is None:
        extractor = resolve_extractor(inception_weights)
    built: list[nn.Module] = []

    def shared_net() -> nn.Module:
        if not built:
            built.append(extractor.create(device))
        return built[0]

    features = {
        key: compute_features(ds, extractor, size=size, batch_size=batch_size, device=device, cache_dir=cache_dir,
                              description=f"features {key}", net=shared_net)
        for key, ds in datasets.items() if len(ds) >= MIN_IMAGES
    }
    dim = int(features["input"].shape[1])
    results = []
    for label, spec in references:
        if label not in features:
            continue
        row: dict[str, Any] = {"reference": label, "spec": spec, "count": len(datasets[label]),
                               "fid": fid_from_features(features["input"], features[label])}
        if kid:
            row.update(kid_from_features(features["input"], features[label]))
        results.append(row)
    small = [(inputs if label == "input" else label, len(datasets[label]))
             for label in ["input", *(r["reference"] for r in results)] if len(datasets[label]) < dim]
    warnings = []
    if small:
        counts = ", ".join(f"{name} {n}" for name, n in small)
        warnings.append(f"FID on fewer images than its {dim} feature dimensions is biased ({counts} images); "
                        f"compare FIDs only at equal N")
    if kid and any(r.get("kid_std") is None for r in results):
        warnings.append(f"KID ± n/a: its spread over {KID_SUBSETS} subsets needs both sets larger than the subset "
                        f"size (up to {KID_SUBSET_SIZE}); with fewer images every subset is the whole set")
    for text in warnings:
        warn(text)
    return {
        "input": {"spec": inputs, "count": len(datasets["input"])},
        "protocol": {
            "resize": RESIZE_PROTOCOL,
            "size": list(size),
            "extractor": extractor.name,
            "layer": extractor.layer,
            "weights": extractor.weights_path,
            "label": extractor.label,
            "comparable_to_papers": extractor.comparable,
            "feature_dim": dim,
        },
        "results": results,
        "skipped": skipped,
        "warnings": warnings,
    }


def _named(label: str, spec: str) -> str:
    """How a reference is named in messages: ``real (demo:w?split=real)`` or just its spec."""
    return spec if label == spec else f"{label} ({spec})"
