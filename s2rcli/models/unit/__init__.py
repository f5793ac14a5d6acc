"""UNIT (``unit``): the networks in ``network.py``, the training task and presets in ``task.py``."""

from .network import UNIT, UNITGenerator
from .task import LOSS_WEIGHTS, UNITLoss, UNITTask, make_unit_task

__all__ = ["UNIT", "UNITGenerator", "LOSS_WEIGHTS", "UNITLoss", "UNITTask", "make_unit_task"]
