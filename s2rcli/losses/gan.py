"""Adversarial losses. Discriminators may return a tensor or a list of tensors
(multi-scale / multi-head); every loss averages over all of them."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch.nn import functional as F

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_list(x: Logits) -> list[torch.Tensor]:
    return [x] if torch.is_tensor(x) else list(x)


def _mean_over(xs: list[torch.Tensor], fn) -> torch.Tensor:
    return sum(fn(x) for x in xs) / len(xs)


def d_loss(kind: str, real: Logits, fake: Logits) -> torch.Tensor:
    """Discriminator loss for ``kind`` in ``lsgan``, ``hinge``, ``nonsaturating``."""
    real, fake = _as_list(real), _as_list(fake)
    if kind == "lsgan":
        return _mean_over(real, lambda r: ((r - 1) ** 2).mean()) + _mean_over(fake, lambda f: (f ** 2).mean())
    if kind == "hinge":
        return _mean_over(real, lambda r: F.relu(1 - r).mean()) + _mean_over(fake, lambda f: F.relu(1 + f).mean())
    if kind == "nonsaturating":
        return _mean_over(real, lambda r: F.softplus(-r).mean()) + _mean_over(fake, lambda f: F.softplus(f).mean())
    raise ValueError(f"unknown GAN loss {kind!r}")


def g_loss(kind: str, fake: Logits) -> torch.Tensor:
    """Generator loss: make the discriminator call ``fake`` real."""
    fake = _as_list(fake)
    if kind == "lsgan":
        return _mean_over(fake, lambda f: ((f - 1) ** 2).mean())
    if kind == "hinge":
        return _mean_over(fake, lambda f: -f.mean())
    if kind == "nonsaturating":
        return _mean_over(fake, lambda f: F.softplus(-f).mean())
    raise ValueError(f"unknown GAN loss {kind!r}")


def r1_penalty(real_logits: Logits, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = E[ ||d D(x) / d x||^2 ] on real images (Mescheder et al. 2018).

    ``real_images`` must have ``requires_grad=True`` before the discriminator ran.
    Multiply by gamma / 2 (and by the lazy interval when applied every N steps).
    """
    total = sum(x.sum() for x in _as_list(real_logits))
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
