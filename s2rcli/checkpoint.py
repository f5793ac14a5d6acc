"""The one checkpoint format shared by every s2r command.

A checkpoint is a single file holding only plain Python types and tensors, so it
loads with ``torch.load(..., weights_only=True)`` and can never run code::

    {"format": "s2r-checkpoint", "format_version": 1,
     "model": name, "model_kwargs": {...}, "label_space": ...,
     "state_dicts": {"G": ..., "D": ..., "G_ema": ...},
     "optimizers": {...}, "schedulers": {...}, "scaler": ...,
     "step": n, "rng": {...}, "sampler": {...}, "config": {...},
     "s2r_version": ...}

Inference (``translate``, ``fid``, ``segment-eval``) needs only ``model``,
``model_kwargs`` and ``state_dicts``; resume restores everything else too.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .errors import S2RError, first_sentence, reason
from .utils.atomic import atomic_path

FORMAT = "s2r-checkpoint"
FORMAT_VERSION = 1

# Upgrades from version n to n+1, applied in order by ``load_checkpoint``.
# Version 0 is the pre-release layout: weights under "nets" and no RNG state.
UPGRADES: dict[int, Callable[[dict], dict]] = {}


def upgrade(from_version: int) -> Callable[[Callable[[dict], dict]], Callable[[dict], dict]]:
    def decorator(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        UPGRADES[from_version] = fn
        return fn

    return decorator


@upgrade(0)
def _v0_to_v1(ckpt: dict) -> dict:
    ckpt = dict(ckpt)
    ckpt["state_dicts"] = ckpt.pop("nets", ckpt.get("state_dicts", {}))
    ckpt.setdefault("rng", {})
    ckpt.setdefault("optimizers", {})
    ckpt.setdefault("schedulers", {})
    ckpt.setdefault("sampler", {})
    ckpt["format_version"] = 1
    return ckpt


def upgrade_checkpoint(ckpt: dict) -> dict:
    version = ckpt.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise S2RError(
            f"checkpoint format version {version} is newer than this s2r understands ({FORMAT_VERSION})",
            hint="upgrade s2r (pip install -U s2rcli)",
        )
    while version < FORMAT_VERSION:
        ckpt = UPGRADES[version](ckpt)
        version = ckpt["format_version"]
    return ckpt


def clean_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Strip the ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    cleaned = {}
    for key, value in state_dict.items():
        parts = [p for p in key.split(".") if p != "_orig_mod"]
        while parts and parts[0] == "module":
            parts = parts[1:]
        cleaned[".".join(parts)] = value
    return cleaned


# --- RNG state --------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states, as checkpoint-safe types."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if not state:
        return
    if "python" in state:
        version, values, gauss = state["python"]
        random.setstate((version, tuple(values), gauss))
    if "numpy" in state:
        s = state["numpy"]
        keys = s["keys"].numpy().astype(np.uint32) if torch.is_tensor(s["keys"]) else np.asarray(s["keys"], np.uint32)
        np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda_states])


# --- save / load --------------------------------------------------------------


def make_checkpoint(
    *,
    model: str,
    model_kwargs: dict[str, Any],
    state_dicts: dict[str, dict[str, Any]],
    label_space: str | None = None,
    optimizers: dict[str, Any] | None = None,
    schedulers: dict[str, Any] | None = None,
    scaler: dict[str, Any] | None = None,
    step: int = 0,
    rng: dict[str, Any] | None = None,
    sampler: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict in the current format."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "model_kwargs": dict(model_kwargs),
        "label_space": label_space,
        "state_dicts": {name: clean_state_dict(sd) for name, sd in state_dicts.items()},
        "optimizers": optimizers or {},
        "schedulers": schedulers or {},
        "scaler": scaler or {},
        "step": int(step),
        "rng": rng or {},
        "sampler": sampler or {},
        "config": config or {},
        "extra": extra or {},
        "s2r_version": __version__,
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``ckpt`` atomically (temp file, fsync, rename).

    A crash mid-write leaves any previous file at ``path`` intact. Refuses to
    replace an existing file unless ``overwrite`` is set.
    """
    if ckpt.get("format") != FORMAT:
        raise ValueError("not an s2r checkpoint dict; build it with make_checkpoint()")
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(ckpt, tmp)
    return path


def _unpickling_reason(exc: Exception) -> str:
    """What a weights-only load refused, in one whole sentence (torch's text leads with advice that does not apply)."""
    for line in str(exc).splitlines():
        if any(word in line for word in ("GLOBAL", "Unsupported", "unsupported")):
            return first_sentence(line.split("error:", 1)[-1])
    return "it holds Python objects, not only tensors and plain data"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and upgrade an s2r checkpoint; refuses anything else with a clear message.

    Uses ``weights_only=True``: a pickle that carries code is rejected, never run.
    """
    path = Path(path)
    if not path.exists():
        raise S2RError(f"checkpoint not found: {path}", hint="check the path (runs keep them in RUN/checkpoints/)")
    if path.is_dir():
        latest = path / "checkpoints" / "latest.pt"
        if latest.exists():
            path = latest
        else:
            raise S2RError(f"{path} is a folder, not a checkpoint file", hint="pass RUN/checkpoints/latest.pt")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):  # neither a torch zip file nor a pickle
        raise S2RError(f"{path} is not an s2r checkpoint (not a PyTorch file)",
                       hint="pass a file written by `s2r train` (RUN/checkpoints/latest.pt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise S2RError(
            f"refusing to load {path}: it is not a plain-data checkpoint ({_unpickling_reason(exc)})",
            hint="s2r loads checkpoints with weights_only=True; only files written by s2r are accepted",
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise S2RError(
            f"cannot read checkpoint {path}: {reason(exc)}",
            hint="the file may be truncated or not a checkpoint at all",
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise S2RError(
            f"{path} is not an s2r checkpoint",
            hint="pass a file written by `s2r train` (RUN/checkpoints/latest.pt)",
        )
    return upgrade_checkpoint(ckpt)
