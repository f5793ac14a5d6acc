"""Models: one registry, one contract, one folder per method.

Each method is a folder with ``network.py`` (the networks) and ``task.py`` (its
losses, training step, presets and the ``@register_model`` call). The imports
below register them; a new model is one new folder plus one line here.
"""

from __future__ import annotations

from .registry import (build_task, count_parameters, create_model, get_model_entry, list_models, model_from_checkpoint,
                       register_model, unregister_model)

# Registration: each import runs the folder's @register_model.
from . import lab2pix  # noqa: E402,F401  isort: skip
from . import segmenters  # noqa: E402,F401  isort: skip
from . import sis  # noqa: E402,F401  isort: skip
from . import unit  # noqa: E402,F401  isort: skip
from . import adapt  # noqa: E402,F401  isort: skip
from . import sait  # noqa: E402,F401  isort: skip

__all__ = ["build_task", "count_parameters", "create_model", "get_model_entry", "list_models", "model_from_checkpoint",
           "register_model", "unregister_model"]
