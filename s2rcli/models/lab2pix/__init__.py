"""Lab2Pix V1 (unpaired) and V2 (paired) label-to-image synthesis: the networks in ``network.py``,
the training tasks, presets and the two registrations (``lab2pix-v1``, ``lab2pix-v2``) in ``task.py``."""

from .network import Lab2Pix, Lab2PixDiscriminators, Lab2PixGenerator
from .task import Lab2PixTask, Lab2PixV1Loss, Lab2PixV2Loss, make_v1_task, make_v2_task

__all__ = ["Lab2Pix", "Lab2PixDiscriminators", "Lab2PixGenerator", "Lab2PixTask", "Lab2PixV1Loss", "Lab2PixV2Loss",
           "make_v1_task", "make_v2_task"]
