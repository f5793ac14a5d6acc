"""Model package. Every module in it registers its models when imported.

A new model is one new file in this folder: ``load_builtin_models`` imports every
submodule, so its ``@register_model`` runs without editing a central list.
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import count_parameters, create_model, get_model_entry, list_models, register_model

__all__ = ["count_parameters", "create_model", "get_model_entry", "list_models", "register_model", "load_builtin_models"]

_LOADED = False
_SKIP = {"registry"}


def load_builtin_models() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
