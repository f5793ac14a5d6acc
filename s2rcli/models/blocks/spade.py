"""SPADE normalisation, SPADE residual blocks and Haar wavelet transforms.

Shared blocks: the label-to-image generator (``sis``) and the semantically
adaptive translator (``sait``) build on them.

* :class:`SPADE` (Park et al. 2019): a parameter-free normalisation whose scale
  and shift are predicted per pixel from a conditioning map (a one-hot label,
  a label plus noise, or a segmenter's logits), resized to the features.
* :class:`SPADEResBlock`: two SPADE-conv stages plus a learned skip when the
  width changes, as in SPADE/OASIS generators.
* :func:`haar_dwt` / :func:`haar_idwt`: the orthonormal one-level 2-D Haar
  transform and its exact inverse, the input representation of the wavelet
  (SWAGAN/USIS-style) discriminator.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("instance", "batch", "none")


def maybe_spectral(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module`` in spectral normalisation when ``enabled``."""
    return spectral_norm(module) if enabled else module


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """The normalisation SPADE modulates: it must carry no affine parameters of its own."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: ``norm(x) * (1 + gamma(c)) + beta(c)``.

    Args:
        channels: channels of the normalised features ``x``.
        cond_channels: channels of the conditioning map ``c``.
        hidden: width of the shared conv that embeds ``c``.
        norm: ``"instance"`` (per-sample statistics, batch-size independent),
            ``"batch"`` or ``"none"``.
        kernel: kernel size of the embedding convs.
        interpolation: how ``c`` is resized to ``x``: ``"nearest"`` for
            one-hot labels, ``"bilinear"`` for soft maps such as logits.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128, norm: str = "instance",
                 kernel: int = 3, interpolation: str = "nearest"):
        super().__init__()
        self.norm = param_free_norm(norm, channels)
        self.interpolation = interpolation
        pad = kernel // 2
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, kernel, padding=pad), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, kernel, padding=pad)
        self.beta = nn.Conv2d(hidden, channels, kernel, padding=pad)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            align = False if self.interpolation in ("bilinear", "bicubic") else None
            cond = F.interpolate(cond, size=x.shape[-2:], mode=self.interpolation, align_corners=align)
        h = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEResBlock(nn.Module):
    """Residual block ``x + conv(act(SPADE(conv(act(SPADE(x))))))``, with a
    SPADE + 1x1-conv skip when ``in_channels != out_channels``.

    Args:
        in_channels / out_channels: widths in and out.
        cond_channels: channels of the conditioning map.
        hidden: SPADE embedding width.
        norm: SPADE's parameter-free normalisation (see :class:`SPADE`).
        spectral: spectral normalisation on the block's convs (SPADE, OASIS).
        interpolation: how the condition is resized (see :class:`SPADE`).
    """

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, hidden: int = 128,
                 norm: str = "instance", spectral: bool = True, interpolation: str = "nearest"):
        super().__init__()
        mid = min(in_channels, out_channels)
        self.learned_skip = in_channels != out_channels
        self.norm0 = SPADE(in_channels, cond_channels, hidden, norm, interpolation=interpolation)
        self.conv0 = maybe_spectral(nn.Conv2d(in_channels, mid, 3, padding=1), spectral)
        self.norm1 = SPADE(mid, cond_channels, hidden, norm, interpolation=interpolation)
        self.conv1 = maybe_spectral(nn.Conv2d(mid, out_channels, 3, padding=1), spectral)
        if self.learned_skip:
            self.norm_s = SPADE(in_channels, cond_channels, hidden, norm, interpolation=interpolation)
            self.conv_s = maybe_spectral(nn.Conv2d(in_channels, out_channels, 1, bias=False), spectral)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_skip else x
        h = self.conv0(F.leaky_relu(self.norm0(x, cond), 0.2))
        h = self.conv1(F.leaky_relu(self.norm1(h, cond), 0.2))
        return skip + h


# --- Haar wavelets -------------------------------------------------------------


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal 2-D Haar transform.

    ``B x C x H x W`` (H, W even) -> ``B x 4C x H/2 x W/2``, bands stacked as
    ``[LL, LH, HL, HH]`` (each C channels): LL is the local average (times 2),
    LH the top-minus-bottom, HL the left-minus-right and HH the diagonal detail.
    Orthonormal, so the energy of ``x`` is preserved and :func:`haar_idwt`
    inverts it exactly.
    """
    if x.dim() != 4:
        raise ValueError(f"haar_dwt expects B x C x H x W, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"haar_dwt needs an even height and width, got {h}x{w}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) / 2
    lh = (a + b - c - d) / 2
    hl = (a - b + c - d) / 2
    hh = (a - b - c + d) / 2
    return torch.cat([ll, lh, hl, hh], dim=1)


def haar_idwt(bands: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt`: ``B x 4C x h x w`` -> ``B x C x 2h x 2w``."""
    if bands.dim() != 4 or bands.shape[1] % 4:
        raise ValueError(f"haar_idwt expects B x 4C x h x w, got shape {tuple(bands.shape)}")
    ll, lh, hl, hh = bands.chunk(4, dim=1)
    a = (ll + lh + hl + hh) / 2
    b = (ll + lh - hl - hh) / 2
    c = (ll - lh + hl - hh) / 2
    d = (ll - lh - hl + hh) / 2
    top = torch.stack([a, b], dim=-1).flatten(-2)      # B x C x h x 2w: a b a b ...
    bottom = torch.stack([c, d], dim=-1).flatten(-2)
    return torch.stack([top, bottom], dim=-2).flatten(-3, -2)  # rows interleaved: top, bottom, ...
