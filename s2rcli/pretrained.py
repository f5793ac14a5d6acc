"""Resolve pretrained weights: explicit path > local cache > download.

Users have internet, so downloading stays in the product. Offline, or when a
download fails, the error names the file, the URL and the folder to put it in.
``"random"`` is an explicit choice (tests, the CPU demo): the network keeps its
random initialisation and a warning says results are not comparable to papers.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from .console import warn
from .errors import S2RError, reason

RANDOM = "random"


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    url: str
    option: str  # the CLI option that takes a local path


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec("vgg16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "--vgg-weights"),
        WeightSpec("vgg19", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "--vgg-weights"),
        WeightSpec(
            "resnet50", "resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth", "--backbone-weights"
        ),
        WeightSpec(
            "inception-fid",
            "weights-inception-2015-12-05-6726825d.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            "--inception-weights",
        ),
    )
}


def cache_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), shared with torchvision."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _download(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(target), progress=True)


def resolve_weights(name: str, choice: str | os.PathLike | None = None, *, download: bool = True) -> Path | None:
    """Find the weight file for ``name``.

    Args:
        name: a key of ``WEIGHTS`` (``vgg16``, ``vgg19``, ``resnet50``, ``inception-fid``).
        choice: an explicit file path, ``"random"`` (returns ``None`` and warns),
            or ``None`` to look in the cache and then download.
        download: allow the download step.

    Returns:
        The path of the weight file, or ``None`` for ``"random"``.
    """
    if name not in WEIGHTS:
        raise S2RError(f"unknown pretrained weights {name!r}", hint="known: " + ", ".join(WEIGHTS))
    spec = WEIGHTS[name]
    if choice is not None and str(choice) == RANDOM:
        warn(f"using randomly initialised {name}: results are not comparable to published numbers")
        return None
    if choice is not None:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise S2RError(
                f"{spec.option} {path}: no such file",
                hint=f"download {spec.url} and pass its path, or use {spec.option} random for a quick test",
            )
        return path
    cached = cache_dir() / spec.filename
    if cached.is_file():
        return cached
    if download:
        try:
            _download(spec.url, cached)
            return cached
        except Exception as exc:  # offline, proxy, disk full: all end in the same advice
            raise S2RError(
                f"could not download {name} weights {spec.filename} ({reason(exc)})",
                hint=f"download {spec.url} and put it at {cached}, or pass {spec.option} PATH",
            ) from exc
    raise S2RError(
        f"{name} weights {spec.filename} are not in the cache",
        hint=f"download {spec.url} and put it at {cached}, or pass {spec.option} PATH",
    )


def load_state_dict(name: str, choice: str | os.PathLike | None = None) -> dict | None:
    """Resolve and load a weight file (``weights_only=True``); ``None`` for random."""
    path = resolve_weights(name, choice)
    if path is None:
        return None
    return safe_load_weights(name, path)


def safe_load_weights(name: str, path: str | os.PathLike) -> dict:
    """Load a weight file with ``weights_only=True``: tensors and plain containers only.

    A file whose pickle would build other objects (and so could run code) is
    refused with a one-line error naming the file; it is never executed.
    """
    path = Path(path)
    url = WEIGHTS[name].url if name in WEIGHTS else None
    again = f"re-download {url}" if url else "use the original weight file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise S2RError(
            f"{path} is not a plain {name} weight file: it holds objects other than tensors, "
            "and s2r does not run code from weight files",
            hint=again,
        ) from exc
    except Exception as exc:
        raise S2RError(f"cannot read {name} weights from {path} ({type(exc).__name__})", hint=again) from exc
    if not isinstance(state, dict):
        raise S2RError(f"{path} holds a {type(state).__name__}, not a {name} state dict", hint=again)
    return state


@contextlib.contextmanager
def weights_only_loads():
    """Within the block, every ``torch.load`` is forced to ``weights_only=True``.

    Third-party loaders that pass ``weights_only=False`` themselves (torch-fidelity
    0.4 does, for Inception weights from a path or the hub cache) then cannot
    run code from a planted file either.
    """
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous
