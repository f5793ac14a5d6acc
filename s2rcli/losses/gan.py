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


KINDS = ("lsgan", "hinge", "nonsaturating")
ROLES = ("real", "fake", "generator")


def pointwise(kind: str, logits: torch.Tensor, role: str) -> torch.Tensor:
    """The adversarial loss of every logit, unreduced (for weighted means, e.g. per-pixel masks).

    ``role``: ``"real"`` (the discriminator's loss on real samples), ``"fake"`` (its loss on
    generated ones) or ``"generator"`` (the generator's loss on its samples).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if kind == "lsgan":
        return logits ** 2 if role == "fake" else (logits - 1) ** 2
    if kind == "hinge":
        return {"real": F.relu(1 - logits), "fake": F.relu(1 + logits), "generator": -logits}[role]
    if kind == "nonsaturating":
        return F.softplus(logits) if role == "fake" else F.softplus(-logits)
    raise ValueError(f"unknown GAN loss {kind!r}")


def d_loss(kind: str, real: Logits, fake: Logits) -> torch.Tensor:
    """Discriminator loss for ``kind`` in ``lsgan``, ``hinge``, ``nonsaturating``."""
    return (_mean_over(_as_list(real), lambda r: pointwise(kind, r, "real").mean())
            + _mean_over(_as_list(fake), lambda f: pointwise(kind, f, "fake").mean()))


def g_loss(kind: str, fake: Logits) -> torch.Tensor:
    """Generator loss: make the discriminator call ``fake`` real."""
    return _mean_over(_as_list(fake), lambda f: pointwise(kind, f, "generator").mean())


def r1_penalty(real_logits: Logits, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = E[ ||d D(x) / d x||^2 ] on real images (Mescheder et al. 2018).

    ``real_images`` must have ``requires_grad=True`` before the discriminator ran.
    Multiply by gamma / 2 (and by the lazy interval when applied every N steps).
    """
    total = sum(x.sum() for x in _as_list(real_logits))
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
