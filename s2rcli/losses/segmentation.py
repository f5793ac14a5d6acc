"""Segmentation losses: cross-entropy with an ignore label, and the symmetric
cross-entropy between two predictions (SAIT, Eq. 5; docs/papers.md)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

IGNORE_INDEX = 255


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel-wise cross-entropy, averaged over the labelled pixels.

    Args:
        logits: ``BxCxHxW`` unnormalised scores.
        target: ``BxHxW`` int64 class indices; ``ignore_index`` pixels do not count.
        weight: optional per-class weights (length ``C``).

    A batch whose pixels are all ignored gives 0 (with a gradient path), not NaN,
    so one unlabelled crop cannot poison a run.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index)


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """``-E[softmax(target) * log_softmax(logits)]`` summed over classes, averaged over pixels."""
    target = F.softmax(target_logits, dim=1)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def symmetric_cross_entropy(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy between two segmentations of the same scene.

    ``CE(b -> a) + CE(a -> b)``: each prediction in turn is the soft target of
    the other (SAIT, Eq. 5: ``M(x_S)`` against ``M(x_{S->T})`` and back).
    Both directions carry gradients; detach one input to use it as a fixed target.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    return soft_cross_entropy(logits_a, logits_b) + soft_cross_entropy(logits_b, logits_a)
