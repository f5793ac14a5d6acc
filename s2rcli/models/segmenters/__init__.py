"""Segmenters (``fastseg``, ``deeplabv3``, ``fcn``): networks in ``network.py``,
training task and presets in ``task.py``."""

from .network import FastSeg, Segmenter, TorchvisionSegmenter
from .task import SegmentationTask, make_segmentation_task

__all__ = ["FastSeg", "Segmenter", "TorchvisionSegmenter", "SegmentationTask", "make_segmentation_task"]
