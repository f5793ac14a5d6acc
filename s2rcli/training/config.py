"""Resolve a training run's configuration, and freeze it.

Lowest to highest priority::

    engine defaults  <  the model preset ("tiny" | "paper")  <  --config FILE (JSON)
                     <  --set dotted.key=value ...           <  explicit options (--steps, --size, ...)

The result is a plain JSON-able dict, written to ``RUN/config.json`` before
step 0 and stored in every checkpoint::

    {"model": "unit", "preset": "tiny", "model_kwargs": {...}, "seed": 0, "label_space": "cityscapes19",
     "data": {ROLE: spec, ..., "smart_batch": false, "pairs": null, "size": [H, W], ...},
     "train": {"steps", "batch_size", "lr", "betas", "weight_decay", "accumulate", "amp", "ema_decay",
               "workers", "checkpoint_every", "keep_every", "sample_every", "log_every", "loss": {...}, ...model keys}}

A preset's ``train`` section (a :class:`~s2rcli.models.config.TrainConfig`
subclass, the one typed place for defaults) supplies ``train``; its ``size``,
if set, is the default of ``data.size`` and its ``label_space`` the run's.
Keys that the model's training config does not have are refused, so a typo
in ``--set`` fails instead of being ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..data.labels import get_label_space
from ..errors import S2RError
from ..models import get_model_entry
from ..models.config import field_names
from ..utils import sizes

SECTIONS = ("model", "preset", "model_kwargs", "seed", "label_space", "data", "train")

DEFAULT_DATA: dict[str, Any] = {"size": [256, 512], "scale_jitter": 0.125, "flip": True}
# Pairing options of models that train on unpaired synthetic and real images.
PAIRED_DATA: dict[str, Any] = {"smart_batch": False, "pairs": None}

def parse_value(text: str) -> Any:
    """``--set`` values: JSON when they parse (``2``, ``1e-4``, ``true``, ``[128,256]``, ``null``), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_size(text: str | Iterable[int]) -> list[int]:
    """``"256x512"`` (or ``[256, 512]``) -> ``[256, 512]``: a list, as JSON configs store it."""
    return list(sizes.parse_size(text))


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(cfg, "train.loss.gan", 2.0)``; the top-level key must be a config section."""
    keys = [k for k in dotted.split(".") if k]
    if not keys or keys[0] not in SECTIONS:
        raise S2RError(f"--set {dotted}: unknown config key {keys[0] if keys else dotted!r}",
                       hint="keys start with one of: " + ", ".join(SECTIONS) + " (e.g. train.lr=2e-4)")
    node = cfg
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise S2RError(f"--set {dotted}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_sets(items: Iterable[str]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items or ():
        if "=" not in item:
            raise S2RError(f"--set {item!r} is not key=value", hint="e.g. --set train.lr=2e-4")
        key, text = item.split("=", 1)
        pairs.append((key.strip(), parse_value(text.strip())))
    return pairs


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise S2RError(f"--config {path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise S2RError(f"--config {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(cfg, dict):
        raise S2RError(f"--config {path} must hold a JSON object")
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:
        raise S2RError(f"--config {path}: unknown keys {unknown}", hint="valid: " + ", ".join(SECTIONS))
    return cfg


def preset_defaults(model: str, preset: str) -> dict[str, Any]:
    """Engine defaults with the preset applied: the base of every resolution."""
    entry = get_model_entry(model)
    section = copy.deepcopy(entry.preset(preset))
    train = deep_merge(dataclasses.asdict(entry.train_config()), section.get("train", {}))
    data = {**{role: None for role in entry.data}, **DEFAULT_DATA}
    if {"synthetic", "real"} <= set(entry.data):
        data.update(PAIRED_DATA)
    size = train.pop("size", None)
    if size:
        data["size"] = list(size)
    return {
        "model": model,
        "preset": preset,
        "model_kwargs": section.get("model", {}),
        "seed": 0,
        "label_space": train.pop("label_space", None) or "cityscapes19",
        "data": data,
        "train": train,
    }


def resolve_config(
    model: str,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    sets: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve the run config for ``model``.

    Args:
        preset: the preset name; ``None`` takes the config file's, else ``"paper"``.
        config_file: a JSON file with any subset of the config (a previous
            run's ``config.json`` works).
        sets: ``"dotted.key=value"`` strings; values are parsed as JSON when they parse.
        options: explicit options as dotted keys (``{"train.steps": 500, "data.size": [64, 128]}``);
            ``None`` values mean "not given".
        base: start from this config instead of the preset (``--resume`` uses the run's own).
    """
    file_cfg = read_config_file(config_file) if config_file else {}
    if file_cfg.get("model") not in (None, model):
        raise S2RError(f"--config is for model {file_cfg['model']!r}, not {model!r}")
    if base is not None:
        cfg = copy.deepcopy(dict(base))
        if preset and preset != cfg.get("preset"):
            raise S2RError(f"this run was trained with preset {cfg.get('preset')!r}; it cannot resume as {preset!r}")
    else:
        cfg = preset_defaults(model, preset or file_cfg.get("preset") or "paper")
    cfg = deep_merge(cfg, {k: v for k, v in file_cfg.items() if k != "preset"})
    for key, value in parse_sets(sets):
        set_dotted(cfg, key, value)
    for key, value in (options or {}).items():
        if value is not None:
            set_dotted(cfg, key, value)
    cfg["model"] = model
    if get_model_entry(model).kind == "segmenter" and cfg.get("label_space"):
        # a segmenter predicts the classes of its label space
        cfg["model_kwargs"]["num_classes"] = get_label_space(cfg["label_space"]).num_classes
    return validate_config(cfg)


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check the keys against the model's typed training config and the engine's values; normalise types.

    (The model checks the values of its own keys when it builds its task.)
    """
    train, data = cfg["train"], cfg["data"]
    known = set(field_names(get_model_entry(cfg["model"]).train_config)) - {"size", "label_space"}
    for key in sorted(set(train) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        raise S2RError(f"train.{key} is not a setting of {cfg['model']}",
                       hint=(f"did you mean train.{close[0]}? " if close else "") + "valid: "
                       + ", ".join(sorted(known)))
    for key in ("steps", "batch_size", "accumulate", "checkpoint_every", "sample_every", "log_every", "workers"):
        value = train.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "workers" else 1):
            raise S2RError(f"train.{key} must be a positive integer, got {value!r}")
    keep = train.get("keep_every", 0)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise S2RError(f"train.keep_every must be 0 (off) or a positive integer, got {keep!r}")
    if train.get("amp") not in (None, "bf16", "fp16"):
        raise S2RError(f"train.amp must be bf16, fp16 or null, got {train['amp']!r}")
    if not 0.0 <= float(train.get("ema_decay", 0.999)) < 1.0:
        raise S2RError(f"train.ema_decay must be in [0, 1), got {train['ema_decay']!r}")
    data["size"] = parse_size(data["size"])
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg["seed"], bool):
        raise S2RError(f"seed must be an integer, got {cfg.get('seed')!r}")
    return cfg


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    keys = sorted(set(old) | set(new))
    diffs = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += config_differences(a, b, name + ".")
        elif a != b:
            diffs.append(name)
    return diffs
