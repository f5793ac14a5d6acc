"""Double-Guided Normalisation (DG-Norm) and its residual block (Lab2Pix, Zhu et al., §3.1.2).

SPADE predicts a normalisation's scale and shift from the label alone, so every
pixel of one class is modulated alike. DG-Norm adds a second guide: a *global*
feature of the whole label map (a few stride-2 convolutions, see
:class:`GlobalEncoder`), resized to the activations, so pixels of one class can
differ by where they sit in the object and the scene. The two guides are
embedded separately and fused by addition; from the fused embedding two convs
predict ``gamma`` and ``beta``, applied to affine batch norm as the paper's eq. 5
prints it::

    DG(x) = gamma * (BN(x) + 1) + beta

Any block that conditions on a map can use it: :class:`DGResBlock` is
:class:`~s2rcli.models.blocks.spade.SPADEResBlock` with its SPADE norms replaced.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .spade import SPADEResBlock, maybe_spectral


class DGNorm(nn.Module):
    """``gamma(c) * (BN(x) + 1) + beta(c)``, ``c`` = a label map and a global feature.

    Args:
        channels: channels of the normalised features ``x``.
        label_channels: channels of the label guide (a one-hot map).
        global_channels: channels of the global feature.
        hidden: width of each guide's embedding.
        kernel: kernel size of the embedding and prediction convs.

    ``forward(x, cond)``: ``cond`` is the label map and the global feature
    concatenated along channels (label first), at any size: the label part is
    resized nearest and the global part bilinearly to ``x``.
    """

    def __init__(self, channels: int, label_channels: int, global_channels: int, hidden: int = 128, kernel: int = 3):
        super().__init__()
        self.label_channels, self.global_channels = int(label_channels), int(global_channels)
        pad = kernel // 2
        self.norm = nn.BatchNorm2d(channels, affine=True)
        self.label_embed = nn.Conv2d(label_channels, hidden, kernel, padding=pad)
        self.global_embed = nn.Conv2d(global_channels, hidden, kernel, padding=pad)
        self.gamma = nn.Conv2d(hidden, channels, kernel, padding=pad)
        self.beta = nn.Conv2d(hidden, channels, kernel, padding=pad)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        label, glob = cond.split([self.label_channels, self.global_channels], dim=1)
        size = x.shape[-2:]
        if label.shape[-2:] != size:
            label = F.interpolate(label, size=size, mode="nearest")
        if glob.shape[-2:] != size:
            glob = F.interpolate(glob, size=size, mode="bilinear", align_corners=False)
        h = F.relu(self.label_embed(label) + self.global_embed(glob))
        return self.gamma(h) * (self.norm(x) + 1) + self.beta(h)


class DGResBlock(SPADEResBlock):
    """:class:`~s2rcli.models.blocks.spade.SPADEResBlock` with DG-Norm in place of each SPADE.

    Args:
        in_channels / out_channels: widths in and out.
        label_channels / global_channels: the two guides (see :class:`DGNorm`); the
            block's ``cond`` is their concatenation, label first.
        hidden: embedding width of each DG-Norm.
        spectral: spectral normalisation on the block's convs.
    """

    def __init__(self, in_channels: int, out_channels: int, label_channels: int, global_channels: int,
                 hidden: int = 128, spectral: bool = True):
        super().__init__(in_channels, out_channels, label_channels + global_channels, hidden, norm="none",
                         spectral=spectral)
        mid = min(in_channels, out_channels)
        # Same residual structure and forward; only the three norms differ.
        self.norm0 = DGNorm(in_channels, label_channels, global_channels, hidden)
        self.norm1 = DGNorm(mid, label_channels, global_channels, hidden)
        if self.learned_skip:
            self.norm_s = DGNorm(in_channels, label_channels, global_channels, hidden)


class GlobalEncoder(nn.Module):
    """``E_global``: ``downs`` stride-2 3x3 convs (LeakyReLU) from a label map to one global feature.

    The receptive field grows with every stride, so each position of the result
    sees a large part of the scene (the shape of a whole object, its neighbours).
    """

    def __init__(self, in_channels: int, channels: int = 64, downs: int = 4, spectral: bool = True):
        super().__init__()
        if downs < 1:
            raise ValueError(f"downs must be >= 1, got {downs}")
        layers: list[nn.Module] = []
        for i in range(downs):
            layers += [maybe_spectral(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, 2, 1), spectral),
                       nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.channels = int(channels)

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        return self.net(label)
