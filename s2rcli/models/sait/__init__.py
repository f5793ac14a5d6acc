"""SAIT (``sait``): the networks in ``network.py``, the training task and presets in ``task.py``."""

from .network import SAIT, SAITGenerator
from .task import LOSS_WEIGHTS, SAITLoss, SAITTask, make_sait_task, semantic_consistency

__all__ = ["SAIT", "SAITGenerator", "LOSS_WEIGHTS", "SAITLoss", "SAITTask", "make_sait_task", "semantic_consistency"]
