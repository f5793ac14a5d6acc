"""One registry for every network s2r builds: translation models and segmenters.

A model's ``task.py`` registers a small factory by name::

    @register_model("unit", kind="translation", input_kind="image",
                    presets={"tiny": {...}, "paper": {...}}, task=make_unit_task)
    def unit(**kwargs) -> UNIT: ...

and everything else (the CLI's choices, ``s2r models``, ``s2r train``,
checkpoints) reads the registry, so nothing drifts from the code. The factory's
return class is checked against the contract of its kind
(:mod:`s2rcli.models.contract`) when it registers.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoint import load_checkpoint
from ..errors import S2RError
from .config import Preset, TrainConfig, field_names
from .contract import missing_methods

KINDS = ("translation", "segmenter")
INPUT_KINDS = ("image", "label")
# The dataset roles a model trains on (keys of the config's "data" section), by kind.
DEFAULT_DATA_ROLES = {"translation": ("synthetic", "real"), "segmenter": ("train",)}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    kind: str
    input_kind: str
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    task: Callable[..., Any] | None = None
    data: tuple[str, ...] = ()
    labelled: tuple[str, ...] = ()
    config: type | None = None
    train_config: type = TrainConfig

    @property
    def trainable(self) -> bool:
        return self.task is not None

    def make_task(self, model: Any, cfg: dict[str, Any], data: dict[str, Any], dist: Any, device: Any) -> Any:
        """The model's :class:`~s2rcli.models.contract.TrainTask` for a resolved run config."""
        if self.task is None:
            raise S2RError(f"model {self.name!r} cannot be trained by s2r", hint="it has no training task")
        return self.task(model, cfg, data, dist, device)

    def preset(self, name: str) -> dict[str, Any]:
        """The preset's settings as plain dicts: ``{"model": kwargs, "train": hyper-parameters}``."""
        if name not in self.presets:
            raise S2RError(
                f"model {self.name!r} has no preset {name!r}",
                hint="valid presets: " + ", ".join(sorted(self.presets)),
            )
        preset = self.presets[name]
        return preset.to_dict() if isinstance(preset, Preset) else preset

    def model_kwargs(self, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
        kwargs = dict(self.preset(preset).get("model", {})) if preset else {}
        kwargs.update(overrides)
        return kwargs

    def build_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments: ``kwargs`` over the config class's defaults; unknown names are refused."""
        if self.config is None:
            return dict(kwargs)
        valid = field_names(self.config)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise S2RError(f"model {self.name!r} has no setting {', '.join(unknown)}",
                           hint="valid model_kwargs: " + ", ".join(valid))
        return dataclasses.asdict(self.config(**kwargs))

_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    kind: str,
    input_kind: str,
    presets: dict[str, dict[str, Any]] | None = None,
    description: str = "",
    task: Callable[..., Any] | None = None,
    data: tuple[str, ...] | None = None,
    labelled: tuple[str, ...] | None = None,
    config: type | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model factory (a class, or a function annotated with its return class).

    Args:
        presets: name -> :class:`~s2rcli.models.config.Preset` (or a plain
            ``{"model": {...}, "train": {...}}`` dict).
        config: the dataclass of the network's settings (its defaults are used
            for anything a preset or caller does not set).
        task: ``task(model, cfg, data, dist, device) -> TrainTask``; models without one
            are inference-only.
        data: the dataset roles it trains on (``cfg["data"][role]`` holds a spec, or a
            list of specs); default by kind: translation ``("synthetic", "real")``,
            segmenter ``("train",)``.
        labelled: the roles whose datasets must have label maps (checked before a
            run folder is touched); default: ``("train",)`` for segmenters, and
            ``("synthetic",)`` for label-to-image models.

    Duplicate names, unknown kinds and classes that miss a method of their
    kind's contract are rejected when registering, not later.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    train_types = {type(p.train) for p in (presets or {}).values() if isinstance(p, Preset)}
    if len(train_types) > 1:
        raise ValueError(f"the presets of {name!r} use different training config classes")
    for preset_name, preset in (presets or {}).items():
        unknown = set() if isinstance(preset, Preset) else set(preset) - {"model", "train"}
        if unknown:
            raise ValueError(f"preset {preset_name!r} of {name!r} has unknown sections {sorted(unknown)}")

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        cls = _built_class(name, factory)
        missing = missing_methods(cls, kind, input_kind)
        if missing:
            raise TypeError(f"model {name!r}: {cls.__name__} lacks {', '.join(missing)}, required of a "
                            f"{kind} model with {input_kind} input (see s2rcli/models/contract.py)")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name=name,
            factory=factory,
            kind=kind,
            input_kind=input_kind,
            presets=dict(presets or {}),
            description=description or (doc[0] if doc else ""),
            task=task,
            data=tuple(data) if data is not None else DEFAULT_DATA_ROLES[kind],
            labelled=tuple(labelled) if labelled is not None else _default_labelled(kind, input_kind),
            config=config,
            train_config=next(iter(train_types)) if train_types else TrainConfig,
        )
        return factory

    return decorator


def _default_labelled(kind: str, input_kind: str) -> tuple[str, ...]:
    if kind == "segmenter":
        return ("train",)
    return ("synthetic",) if input_kind == "label" else ()


def _built_class(name: str, factory: Callable[..., Any]) -> type:
    """The class a factory builds: the factory itself, or its return annotation."""
    if isinstance(factory, type):
        return factory
    try:
        cls = typing.get_type_hints(factory).get("return")
    except NameError as exc:
        raise TypeError(f"model {name!r}: cannot resolve the factory's return annotation ({exc})") from exc
    if not isinstance(cls, type):
        raise TypeError(f"model {name!r}: annotate the factory's return class (def {factory.__name__}(...) -> MyModel) "
                        "so its contract can be checked")
    return cls


def unregister_model(name: str) -> None:
    """Remove a registration (for tests and plugins that re-register)."""
    _REGISTRY.pop(name, None)


def _ensure_builtins() -> None:
    # The package imports this module before it imports the models, so the
    # built-in models are loaded on first use rather than at import.
    import s2rcli.models  # noqa: F401


def list_models(kind: str | None = None, *, trainable: bool = False) -> list[str]:
    """Registered model names, sorted; optionally only one ``kind``, or only those s2r can train."""
    _ensure_builtins()
    return sorted(n for n, e in _REGISTRY.items()
                  if (kind is None or e.kind == kind) and (e.trainable or not trainable))


def get_model_entry(name: str, kind: str | None = None) -> ModelEntry:
    _ensure_builtins()
    entry = _REGISTRY.get(name)
    if entry is None or (kind is not None and entry.kind != kind):
        valid = list_models(kind)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = (f"did you mean {close[0]!r}? " if close else "") + "valid names: " + (", ".join(valid) or "(none)")
        what = f"{kind} model" if kind else "model"
        raise S2RError(f"unknown {what} {name!r}", hint=hint)
    return entry


def create_model(name: str, preset: str | None = None, **kwargs: Any) -> Any:
    """Build a registered model.

    Args:
        name: the registered name, e.g. ``"unit"``.
        preset: optional preset whose ``model`` kwargs are the starting point.
        **kwargs: override individual constructor arguments.

    >>> net = create_model("unit", preset="tiny")
    """
    entry = get_model_entry(name)
    return entry.factory(**entry.build_kwargs(entry.model_kwargs(preset, **kwargs)))


def build_task(model: Any, cfg: dict[str, Any], data: dict[str, Any], dist: Any, device: Any) -> Any:
    """The training task of ``model`` (from :func:`create_model`) for the resolved config ``cfg``."""
    return get_model_entry(str(cfg["model"])).make_task(model, cfg, data, dist, device)


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters()) if hasattr(module, "parameters") else 0


def model_from_checkpoint(
    ckpt: dict[str, Any] | str | Path, *, prefer_ema: bool = True, map_location: str | torch.device = "cpu"
):
    """Rebuild the registered model from a checkpoint and load its weights.

    Returns ``(model, ckpt)``. The model's ``load_s2r_state_dicts(state_dicts,
    prefer_ema)`` decides how the named state dicts map onto it; plain modules
    get ``state_dicts["model"]``.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt, map_location=map_location)
    model = create_model(ckpt["model"], **ckpt["model_kwargs"])
    loader = getattr(model, "load_s2r_state_dicts", None)
    if loader is not None:
        loader(ckpt["state_dicts"], prefer_ema=prefer_ema)
    else:
        model.load_state_dict(ckpt["state_dicts"]["model"])
    model.eval()
    return model, ckpt
