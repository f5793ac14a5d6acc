"""SAIT's adaptation stage (``adapt``): the adapted segmenter in ``network.py``, the offline
pseudo-labels in ``pseudo_labels.py``, the training task and presets in ``task.py``."""

from .network import AdaptedSegmenter, load_base_segmenter
from .pseudo_labels import PseudoLabelled, pseudo_label, write_pseudo_labels
from .task import AdaptTask, make_adapt_task

__all__ = ["AdaptedSegmenter", "load_base_segmenter", "PseudoLabelled", "pseudo_label", "write_pseudo_labels",
           "AdaptTask", "make_adapt_task"]
