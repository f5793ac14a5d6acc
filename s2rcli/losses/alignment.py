"""The patch operator P(x) and the patch-wise perceptual alignment loss (Pragmatic SIS, §III-C; docs/papers.md).

``P(x)`` cuts every image into ``n = k * k`` equal, non-overlapping patches
(a k x k grid) and stacks them along the batch dimension, so a network sees
each patch as an image of its own. The alignment loss is LPIPS-style without
learned weights (eq. 3 of the paper): for each VGG layer, unit-normalise the
activations along channels, take the squared difference, sum over channels,
average over positions and patches; then sum over layers. Applied to patches,
a small object weighs more in its patch's features than in the whole image's.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


def patch_grid(patches: int) -> int:
    """The grid side ``k`` for ``patches = k * k`` (1, 4, 9, 16, ...); rejects the rest."""
    k = math.isqrt(int(patches)) if int(patches) > 0 else 0
    if k < 1 or k * k != int(patches):
        raise ValueError(f"patches must be a perfect square (1, 4, 9, 16, ...), got {patches}")
    return k


def check_patchable(height: int, width: int, patches: int) -> None:
    """Raise ``ValueError`` unless an ``height x width`` image splits into ``patches`` equal patches."""
    k = patch_grid(patches)
    if height % k or width % k:
        raise ValueError(
            f"a {height}x{width} image does not split into {patches} equal patches: "
            f"height and width must be multiples of {k}"
        )


def patchify(x: torch.Tensor, patches: int = 4) -> torch.Tensor:
    """P(x): ``B x C x H x W`` -> ``(B * patches) x C x H/k x W/k``.

    Patches of one image are consecutive, in row-major grid order: row ``b * patches
    + i * k + j`` is patch ``(i, j)`` of image ``b``. ``patches=1`` returns ``x``.
    """
    k = patch_grid(patches)
    if k == 1:
        return x
    b, c, h, w = x.shape
    check_patchable(h, w, patches)
    grid = x.reshape(b, c, k, h // k, k, w // k).permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(b * k * k, c, h // k, w // k)


def unpatchify(p: torch.Tensor, patches: int = 4) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``(B * patches) x C x h x w`` -> ``B x C x kh x kw``."""
    k = patch_grid(patches)
    if k == 1:
        return p
    n, c, h, w = p.shape
    if n % (k * k):
        raise ValueError(f"a stack of {n} patches is not a whole number of images of {patches} patches")
    b = n // (k * k)
    return p.reshape(b, k, k, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, k * h, k * w)


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every position's feature vector (dim 1) to unit length, as LPIPS does."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def perceptual_distance(fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor],
                        weights: Sequence[float] | None = None) -> torch.Tensor:
    """LPIPS-style distance between two lists of activations, averaged over the batch.

    Per layer: ``mean over (batch, positions) of sum over channels of
    (unit(fx) - unit(fy))^2`` (each in [0, 4]); layers are summed, weighted.
    """
    if len(fx) != len(fy):
        raise ValueError("both feature lists must have the same layers")
    weights = [1.0] * len(fx) if weights is None else list(weights)
    total = fx[0].new_zeros(())
    for w, a, b in zip(weights, fx, fy):
        total = total + w * (unit_normalize(a) - unit_normalize(b)).pow(2).sum(dim=1).mean()
    return total


class PatchPerceptualLoss(nn.Module):
    """Patch-wise perceptual alignment loss ``sum_l || phi_l(P(x)) - phi_l(P(y)) ||^2``.

    Args:
        features: maps an image batch in [-1, 1] to a list of activations, e.g.
            :class:`s2rcli.losses.perceptual.VGGFeatures` (frozen).
        patches: 1 (whole image, Table III config A), 4 (config B, the paper's
            best) or 16 (config C); any perfect square works.
        weights: per-layer weights (default 1 each).

    ``forward(x, target)`` back-propagates into ``x`` only; the target's
    features are computed without a graph.

    >>> loss = PatchPerceptualLoss(VGGFeatures("vgg16", weights="random"), patches=4)
    >>> loss(generated, synthetic)  # doctest: +SKIP
    """

    def __init__(self, features: Callable[[torch.Tensor], Sequence[torch.Tensor]], patches: int = 4,
                 weights: Sequence[float] | None = None):
        super().__init__()
        patch_grid(patches)
        self.features = features
        self.patches = int(patches)
        self.weights = None if weights is None else list(weights)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if x.shape != target.shape:
            raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(target.shape)}")
        fx = self.features(patchify(x, self.patches))
        with torch.no_grad():
            fy = self.features(patchify(target, self.patches))
        return perceptual_distance(fx, fy, self.weights)
