"""Pragmatic synthetic-to-real semantic image synthesis (``sis``): networks in
``network.py``, training task and presets in ``task.py``."""

from .network import SIS, SISGenerator, encode_labels
from .task import SISLoss, SISTask, make_sis_task

__all__ = ["SIS", "SISGenerator", "encode_labels", "SISLoss", "SISTask", "make_sis_task"]
