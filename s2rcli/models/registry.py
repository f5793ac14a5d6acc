"""One registry for every network s2r builds: translation models and segmenters.

A model file registers a small factory by name::

    @register_model("unit", kind="translation", input_kind="image",
                    presets={"tiny": {...}, "paper": {...}})
    def unit(**kwargs) -> nn.Module: ...

and everything else (the CLI's choices, ``s2r models``, checkpoints) reads the
registry, so nothing drifts from the code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import S2RError

KINDS = ("translation", "segmenter")
INPUT_KINDS = ("image", "label")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., Any]
    kind: str
    input_kind: str
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    def preset(self, name: str) -> dict[str, Any]:
        """The preset's settings: ``{"model": kwargs, "train": hyper-parameters}``."""
        if name not in self.presets:
            raise S2RError(
                f"model {self.name!r} has no preset {name!r}",
                hint="valid presets: " + ", ".join(sorted(self.presets)),
            )
        return self.presets[name]

    def model_kwargs(self, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
        kwargs = dict(self.preset(preset).get("model", {})) if preset else {}
        kwargs.update(overrides)
        return kwargs


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    kind: str,
    input_kind: str,
    presets: dict[str, dict[str, Any]] | None = None,
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a model factory under ``name``.

    Duplicate names and unknown kinds are rejected when registering, not later.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    for preset_name, preset in (presets or {}).items():
        unknown = set(preset) - {"model", "train"}
        if unknown:
            raise ValueError(f"preset {preset_name!r} of {name!r} has unknown sections {sorted(unknown)}")

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name=name,
            factory=factory,
            kind=kind,
            input_kind=input_kind,
            presets=dict(presets or {}),
            description=description or (doc[0] if doc else ""),
        )
        return factory

    return decorator


def unregister_model(name: str) -> None:
    """Remove a registration (for tests and plugins that re-register)."""
    _REGISTRY.pop(name, None)


def _ensure_builtins() -> None:
    from . import load_builtin_models  # local import: the package imports this module

    load_builtin_models()


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, sorted; optionally only one ``kind``."""
    _ensure_builtins()
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


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
    return entry.factory(**entry.model_kwargs(preset, **kwargs))


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters()) if hasattr(module, "parameters") else 0
