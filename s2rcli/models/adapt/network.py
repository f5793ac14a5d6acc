"""The adapted segmenter: a registered segmenter, fine-tuned by SAIT's adaptation stage.

The network is the underlying segmenter itself (``fastseg``, ``deeplabv3``,
``fcn``, ...), built from the registry by name and kwargs; this module only
wraps it so that an ``adapt`` run keeps its own name (for ``--resume``) while
its checkpoint stays a plain segmenter checkpoint: ``state_dicts["S"]`` is the
underlying network's state dict, and ``segment-eval``, SP-Feat and a SAIT
translator all load it like any segmenter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ...checkpoint import load_checkpoint
from ...errors import S2RError
from ..registry import create_model, get_model_entry, model_from_checkpoint
from ..segmenters.network import Segmenter

NAME = "adapt"


class AdaptedSegmenter(Segmenter):
    """The segmenter ``segmenter`` (built with ``segmenter_kwargs`` and ``num_classes``) as ``S``.

    Its settings and their defaults are ``AdaptConfig`` in ``task.py``.
    """

    def __init__(self, num_classes: int, segmenter: str, segmenter_kwargs: Mapping[str, Any]):
        super().__init__()
        if segmenter == NAME:
            raise S2RError("an adapted segmenter wraps a plain segmenter, not another adapted one")
        self.attach(create_model(segmenter, **{**dict(segmenter_kwargs), "num_classes": int(num_classes)}),
                    segmenter, segmenter_kwargs)

    def attach(self, net: nn.Module, name: str, kwargs: Mapping[str, Any]) -> None:
        """Use ``net`` (registered as ``name`` with ``kwargs``) as ``S``."""
        self.S = net
        self.segmenter = name
        self.segmenter_kwargs = {**dict(kwargs), "num_classes": int(net.num_classes)}
        self.num_classes = int(net.num_classes)
        self.stride = int(getattr(net, "stride", 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S(x)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return self.S.backbone_parameters() if hasattr(self.S, "backbone_parameters") else []

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        loader = getattr(self.S, "load_s2r_state_dicts", None)
        if loader is not None:
            loader(state_dicts, prefer_ema=prefer_ema)
        else:
            self.S.load_state_dict(state_dicts["S"])


def load_base_segmenter(path: str | Path) -> tuple[nn.Module, str, dict[str, Any], dict[str, Any]]:
    """``(network, registry name, kwargs, checkpoint)`` of a segmenter checkpoint (or run folder).

    An adapted segmenter is unwrapped to the network it adapted, so a translator
    conditioned on it, or a further adaptation, holds a plain segmenter. Other
    checkpoints (translators) are refused in one line.
    """
    ckpt = load_checkpoint(path)
    entry = get_model_entry(str(ckpt.get("model")))
    if entry.kind != "segmenter":
        raise S2RError(f"--segmenter {path} is a {entry.kind} checkpoint ({entry.name}), not a segmenter",
                       hint="pass a segmenter's checkpoint, e.g. RUN/checkpoints/latest.pt of "
                            "`s2r segment-eval train-and-test` or `s2r train adapt`")
    model, ckpt = model_from_checkpoint(ckpt)
    if isinstance(model, AdaptedSegmenter):
        return model.S, model.segmenter, dict(model.segmenter_kwargs), ckpt
    return model, entry.name, dict(ckpt["model_kwargs"]), ckpt
