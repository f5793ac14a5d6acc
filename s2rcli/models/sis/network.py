"""``sis``: pragmatic synthetic-to-real semantic image synthesis (Pragmatic SIS; docs/papers.md).

A generator learns ``G(m, z)``: a label map ``m`` plus noise ``z`` to a realistic
image, from synthetic labels with their images and *unlabeled* real images.

* **Generator**: SPADE/OASIS-style residual generator. The one-hot label is
  concatenated with 3-D noise (``z_dim`` = 64 channels: a per-image vector
  broadcast to every pixel, as OASIS does; a per-pixel ``z`` map may be passed
  instead) and conditions every SPADE block.
* **Realism**: ``D_u``, a whole-image discriminator on Haar wavelet
  coefficients with lazy R1, plus an ensemble ``{D_l}`` of discriminators on
  frozen VGG features of the last L ReLU taps; each ``D_l`` is
  5 x (conv, GroupNorm, ReLU) and a 1x1 conv to a 1-channel map, all spectrally
  normalised. The ensemble sees ``P(x)``: the image cut into 4 equal patches
  stacked along the batch (Table IV, configuration E).
* **Alignment**: the patch-wise perceptual (LPIPS-style) loss between
  ``P(x_synthetic)`` and ``P(G(m_synthetic))`` (Table III, configuration B).
* Non-saturating GAN loss; Adam, lr 1e-4.

Label value 255 (ignore) becomes an extra "unknown" one-hot channel by
default (``unknown="channel"``), or an all-zero one-hot (``unknown="zero"``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ...data.labels import get_label_space
from ...errors import S2RError
from ..blocks.spade import NORMS, SPADEResBlock, haar_dwt, maybe_spectral

IGNORE = 255
UNKNOWN_MODES = ("channel", "zero")

# Channels of each VGG ReLU, by stage (same for VGG16 and VGG19).
_VGG_STAGE_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def vgg_channels(layer: str) -> int:
    """Channels of a VGG ReLU named like ``relu4_3``."""
    try:
        return _VGG_STAGE_CHANNELS[int(layer[4])]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"not a VGG ReLU name: {layer!r} (expected e.g. relu4_3)") from None


def encode_labels(labels: torch.Tensor, num_classes: int, unknown: str = "channel") -> torch.Tensor:
    """``B x H x W`` int labels (255 = ignore) -> float one-hot ``B x C' x H x W``.

    ``unknown="channel"``: C' = C + 1 and ignored pixels light the extra channel;
    ``unknown="zero"``: C' = C and ignored pixels are all zero.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be B x H x W, got shape {tuple(labels.shape)}")
    labels = labels.long()
    ignore = labels == IGNORE
    bad = ~ignore & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = sorted(set(labels[bad].unique().tolist()))[:5]
        raise S2RError(
            f"label values {values} are outside 0..{num_classes - 1} (255 = ignore) of this model's label space",
            hint="pass labels in the model's label space (see the checkpoint's label_space), e.g. via `s2r prepare remap`",
        )
    index = labels.masked_fill(ignore, num_classes)
    onehot = F.one_hot(index, num_classes + 1).permute(0, 3, 1, 2).float()
    return onehot if unknown == "channel" else onehot[:, :num_classes]


# --- generator ---------------------------------------------------------------------------------


class SISGenerator(nn.Module):
    """OASIS-style generator ``G(labels, z)``.

    The label one-hot concatenated with the noise map conditions every SPADE
    block; the first conv sees it downsampled to ``H/stride x W/stride``. Each
    block but the last is followed by nearest x2 upsampling, so
    ``stride = 2 ** (len(mults) - 2)``.

    Args:
        num_classes: classes of the label space (255 = ignore).
        z_dim: noise channels.
        ngf: base width; block widths are ``ngf * mults[i]``.
        mults: width multipliers: the first conv, then one per SPADE block.
        spade_hidden: SPADE embedding width.
        norm: SPADE's parameter-free norm (``instance`` keeps samples independent).
        spectral: spectral norm on the convs (as SPADE and OASIS do).
        unknown: how label 255 is encoded (``channel`` or ``zero``).
    """

    def __init__(self, num_classes: int, z_dim: int = 64, ngf: int = 64, mults: Sequence[int] = (16, 16, 16, 8, 4, 2, 1),
                 spade_hidden: int = 128, norm: str = "instance", spectral: bool = True, unknown: str = "channel"):
        super().__init__()
        if len(mults) < 2:
            raise ValueError("mults needs at least two entries (the first conv and one block)")
        if unknown not in UNKNOWN_MODES:
            raise ValueError(f"unknown must be one of {UNKNOWN_MODES}, got {unknown!r}")
        self.num_classes, self.z_dim, self.unknown = int(num_classes), int(z_dim), unknown
        self.stride = 2 ** (len(mults) - 2)
        label_channels = num_classes + (1 if unknown == "channel" else 0)
        cond = label_channels + z_dim
        widths = [ngf * m for m in mults]
        self.head = maybe_spectral(nn.Conv2d(cond, widths[0], 3, padding=1), spectral)
        self.blocks = nn.ModuleList(
            SPADEResBlock(widths[i], widths[i + 1], cond, spade_hidden, norm=norm, spectral=spectral)
            for i in range(len(widths) - 1)
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def condition(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The conditioning map: one-hot label and noise, ``B x (C' + z_dim) x H x W``."""
        seg = encode_labels(labels, self.num_classes, self.unknown)
        b, _, h, w = seg.shape
        if z.dim() == 2:
            z = z[:, :, None, None].expand(b, self.z_dim, h, w)  # the same vector at every pixel
        elif z.dim() == 4 and z.shape[-2:] != (h, w):
            z = F.interpolate(z, size=(h, w), mode="nearest")
        if z.shape[:2] != (b, self.z_dim):
            raise ValueError(f"z must be B x {self.z_dim} or B x {self.z_dim} x H x W, got {tuple(z.shape)}")
        return torch.cat([seg, z.to(seg.dtype)], dim=1)

    def forward(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, w = labels.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"label size {h}x{w} is not a multiple of the generator stride {self.stride}")
        cond = self.condition(labels, z)
        pyramid = {(h, w): cond}  # the condition at each block's resolution, resized once

        def cond_at(size: tuple[int, int]) -> torch.Tensor:
            if size not in pyramid:
                pyramid[size] = F.interpolate(cond, size=size, mode="nearest")
            return pyramid[size]

        x = self.head(cond_at((h // self.stride, w // self.stride)))
        for i, block in enumerate(self.blocks):
            x = block(x, cond_at(tuple(x.shape[-2:])))
            if i < len(self.blocks) - 1:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


# --- discriminators ----------------------------------------------------------------------------


class _DownResBlock(nn.Module):
    """Two 3x3 convs and a 1x1 skip, optionally halving the resolution (average pooling)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, down: bool) -> torch.Tensor:
        h = F.leaky_relu(self.conv0(x), 0.2)
        h = F.leaky_relu(self.conv1(h), 0.2)
        skip = self.skip(x)
        if down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return (h + skip) / math.sqrt(2)


class WaveletDiscriminator(nn.Module):
    """``D_u``: one realism score per image, computed on Haar wavelet coefficients.

    The image enters as its one-level Haar transform (12 channels at half
    resolution); every block halves the resolution and adds the wavelet
    transform of the image at that scale (input skips, as in SWAGAN/USIS).
    Blocks stop downsampling below 8 pixels, and a global average pools the
    last features, so any even-sized input works: whole images or ``P(x)`` patches.

    Args:
        channels: the width after the first 1x1 conv, then one per block.
    """

    def __init__(self, channels: Sequence[int] = (64, 128, 256, 512, 512, 512)):
        super().__init__()
        channels = list(channels)
        self.from_wavelet = nn.ModuleList(nn.Conv2d(12, c, 1) for c in channels)
        self.blocks = nn.ModuleList(_DownResBlock(channels[i], channels[i + 1]) for i in range(len(channels) - 1))
        self.final = nn.Conv2d(channels[-1], channels[-1], 3, padding=1)
        self.head = nn.Linear(channels[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x
        h = F.leaky_relu(self.from_wavelet[0](haar_dwt(image)), 0.2)
        for block, from_wavelet in zip(self.blocks, self.from_wavelet[1:]):
            down = min(h.shape[-2:]) >= 8 and h.shape[-2] % 2 == 0 and h.shape[-1] % 2 == 0
            h = block(h, down)
            if down:
                image = F.avg_pool2d(image, 2)
            h = h + from_wavelet(haar_dwt(image))
        h = F.leaky_relu(self.final(h), 0.2)
        return self.head(h.mean(dim=(2, 3)))


class FeatureDiscriminator(nn.Module):
    """One ``D_l``: 5 x (conv 3x3, GroupNorm, ReLU), then a 1x1 conv to a realism map; spectral norm throughout."""

    def __init__(self, in_channels: int, width: int = 256, groups: int = 8, depth: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [spectral_norm(nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1)),
                       nn.GroupNorm(groups, width), nn.ReLU()]
        layers.append(spectral_norm(nn.Conv2d(width, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class FeatureDiscriminatorEnsemble(nn.Module):
    """``{D_l}``: one :class:`FeatureDiscriminator` per VGG layer name."""

    def __init__(self, layers: Sequence[str], width: int = 256, groups: int = 8):
        super().__init__()
        self.layers = tuple(layers)
        self.heads = nn.ModuleDict({name: FeatureDiscriminator(vgg_channels(name), width, groups) for name in layers})

    def forward(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [self.heads[name](features[name]) for name in self.layers]


# --- the registered model ----------------------------------------------------------------------


class SIS(nn.Module):
    """The ``sis`` model: ``G``, ``D_u`` and ``D_l`` (the frozen VGG lives in the training task).

    Inference: :meth:`generate`. Training: ``make_sis_task`` in ``task.py``, where
    ``SISConfig`` holds these settings and their defaults.
    """

    def __init__(
        self,
        label_space: str,
        num_classes: int | None,   # None: taken from label_space
        z_dim: int,
        ngf: int,
        g_mults: Sequence[int],
        spade_hidden: int,
        norm: str,
        g_spectral: bool,
        unknown: str,
        du_channels: Sequence[int],
        vgg_arch: str,
        d_layers: Sequence[str],
        dl_width: int,
        dl_groups: int,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.label_space = label_space
        self.num_classes = int(num_classes) if num_classes is not None else get_label_space(label_space).num_classes
        self.kwargs = dict(
            label_space=label_space, num_classes=num_classes, z_dim=z_dim, ngf=ngf, g_mults=list(g_mults),
            spade_hidden=spade_hidden, norm=norm, g_spectral=g_spectral, unknown=unknown,
            du_channels=list(du_channels), vgg_arch=vgg_arch, d_layers=list(d_layers), dl_width=dl_width,
            dl_groups=dl_groups,
        )
        self.vgg_arch = vgg_arch
        self.G = SISGenerator(self.num_classes, z_dim, ngf, g_mults, spade_hidden, norm, g_spectral, unknown)
        self.D_u = WaveletDiscriminator(du_channels)
        self.D_l = FeatureDiscriminatorEnsemble(d_layers, dl_width, dl_groups)
        self.stride = self.G.stride
        self.z_dim = int(z_dim)

    def sample_noise(self, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """``batch x z_dim`` standard normal noise; with a ``generator``, drawn on its
        device and then moved, so a seed gives the same noise on every device."""
        device = torch.device(device) if device is not None else next(self.G.parameters()).device
        if generator is None:
            return torch.randn(batch, self.z_dim, device=device)
        return torch.randn(batch, self.z_dim, generator=generator, device=generator.device).to(device)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None,
                 z: torch.Tensor | None = None) -> torch.Tensor:
        """Images for label maps.

        Args:
            labels: int64 ``B x H x W`` in the model's label space (255 = ignore);
                H and W must be multiples of :attr:`stride`.
            generator: seeds the noise; the same seed gives the same image,
                different seeds different images for the same label.
            z: explicit noise, ``B x z_dim`` or a per-pixel ``B x z_dim x H x W`` map.

        Returns:
            ``B x 3 x H x W`` in [-1, 1].
        """
        if labels.dim() == 2:
            labels = labels[None]
        h, w = labels.shape[-2:]
        if h % self.stride or w % self.stride:
            raise S2RError(f"label size {h}x{w} is not a multiple of the model's stride {self.stride}",
                           hint=f"pad or resize the labels to multiples of {self.stride}")
        device = next(self.G.parameters()).device
        if z is None:
            z = self.sample_noise(labels.shape[0], generator, device)
        was_training = self.G.training
        self.G.eval()
        try:
            return self.G(labels.to(device), z.to(device))
        finally:
            self.G.train(was_training)

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        """Load ``G`` (``G_ema`` when ``prefer_ema`` and present), and the discriminators when present."""
        key = "G_ema" if prefer_ema and "G_ema" in state_dicts else "G"
        if key not in state_dicts:
            raise S2RError("the checkpoint holds no sis generator weights (G or G_ema)",
                           hint="pass a checkpoint written by `s2r train sis`")
        self.G.load_state_dict(state_dicts[key])
        for name in ("D_u", "D_l"):
            if name in state_dicts:
                getattr(self, name).load_state_dict(state_dicts[name])
