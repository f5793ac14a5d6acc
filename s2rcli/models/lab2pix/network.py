"""Lab2Pix networks (Zhu et al., "Label-Guided Generative Adversarial Network for Realistic Image
Synthesis"): the generator shared by V1 and V2, and the hierarchical perceptual discriminators.

* **Generator** (:class:`Lab2PixGenerator`). A 128-d noise ``z`` goes through a
  fully connected layer to a small 3-D feature; two GenResBlks at that base
  resolution encode the label with it (the semantic label encoder, §3.1.1), then
  every further GenResBlk doubles the resolution. A GenResBlk is a residual
  block normalised by **DG-Norm** (:mod:`s2rcli.models.blocks.dgnorm`): batch
  norm, then ``gamma`` and ``beta`` predicted from the label and from a global
  feature of the whole label map; with ``dgnorm=False`` it is SPADE's block on
  batch norm (the paper's baseline GenResBlk). The last ``scales`` blocks each
  end in an RGB head, so one pass gives images at ``H/4, H/2, H`` (V1) or only
  ``H`` (V2). **LSCA** (:class:`LSCA`) fuses the previous block's features into
  the last two blocks through an attention map predicted from both features and
  the label.
* **Hierarchical perceptual discriminator** (:class:`HPDiscriminator`): a
  PatchGAN-style main branch of strided convs and mini-inception blocks, into
  which the frozen VGG16 features ``pool3``, ``pool4`` and ``pool5`` of the same
  image are concatenated. ``D_i`` answers at ``i`` levels (1/8, 1/16, 1/32 of
  its input). The VGG runs in the training task, which passes its features in.
  :class:`PlainDiscriminator` (one PatchGAN level, no VGG) is the ablation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ...data.labels import get_label_space
from ...errors import S2RError
from ..blocks.dgnorm import DGResBlock, GlobalEncoder
from ..blocks.layers import PatchDiscriminator
from ..blocks.spade import SPADEResBlock, maybe_spectral
from ..sis.network import UNKNOWN_MODES, encode_labels

MAX_SCALES = 3       # images per pass (V1), and discriminators (D_1..D_3)
LSCA_BLOCKS = 2      # LSCA fuses into the last two blocks


# --- generator ---------------------------------------------------------------------------------


class LSCA(nn.Module):
    """Label-guided spatial co-attention (§3.1.3, eq. 7).

    ``low`` (the previous block's features) is upsampled x2 and convolved to
    ``low'``; a 3x3 conv and a sigmoid predict a one-channel attention ``A`` from
    ``[low', high, label]``; the result is ``low' * A + high * (1 - A)``, so what
    the coarser block already drew well can pass through unchanged.
    """

    def __init__(self, low_channels: int, high_channels: int, label_channels: int, spectral: bool = True):
        super().__init__()
        self.lift = maybe_spectral(nn.Conv2d(low_channels, high_channels, 3, padding=1), spectral)
        self.attend = nn.Conv2d(2 * high_channels + label_channels, 1, 3, padding=1)

    def forward(self, low: torch.Tensor, high: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.fuse(low, high, label)[0]

    def fuse(self, low: torch.Tensor, high: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused features and the attention map ``A`` (``B x 1 x H x W``)."""
        low = self.lift(F.interpolate(low, size=high.shape[-2:], mode="nearest"))
        attention = torch.sigmoid(self.attend(torch.cat([low, high, label], dim=1)))
        return low * attention + high * (1 - attention), attention


class Lab2PixGenerator(nn.Module):
    """``G(labels, z)`` -> a list of images, coarse to fine (the last at the label's size).

    Args:
        num_classes: classes of the label space (255 = ignore).
        z_dim: noise dimensions.
        z_grid: ``[h, w]`` of the 3-D noise feature the fully connected layer
            makes; it is resized (bilinear) to the base resolution ``H/stride x W/stride``.
        ngf: base width; block widths are ``ngf * mults[i]``.
        mults: width multipliers: the noise feature, the two label-encoder blocks,
            then one per upsampling block, so ``stride = 2 ** (len(mults) - 3)``.
        hidden: embedding width of DG-Norm (or SPADE).
        global_channels / global_downs: width and stride-2 convs of the global encoder.
        scales: output images (1 to 3), from the last ``scales`` blocks.
        lsca: fuse the previous block into the last two blocks with LSCA.
        dgnorm: DG-Norm (label + global feature); ``False``: SPADE on batch norm (label only).
        spectral: spectral norm on the generator's convs.
        unknown: how label 255 is encoded (``channel`` or ``zero``, as in ``sis``).
    """

    def __init__(self, num_classes: int, z_dim: int = 128, z_grid: Sequence[int] = (4, 8), ngf: int = 64,
                 mults: Sequence[int] = (16, 16, 16, 8, 4, 2, 1), hidden: int = 128, global_channels: int = 64,
                 global_downs: int = 4, scales: int = 3, lsca: bool = True, dgnorm: bool = True, spectral: bool = True,
                 unknown: str = "channel"):
        super().__init__()
        if unknown not in UNKNOWN_MODES:
            raise ValueError(f"unknown must be one of {UNKNOWN_MODES}, got {unknown!r}")
        if not 1 <= scales <= MAX_SCALES:
            raise ValueError(f"scales must be 1 to {MAX_SCALES}, got {scales}")
        ups = len(mults) - 3
        if ups < max(scales, LSCA_BLOCKS if lsca else 1):
            raise ValueError(f"mults {list(mults)} give {max(ups, 0)} upsampling blocks; {scales} output scales"
                             + (" and LSCA" if lsca else "") + f" need at least {max(scales, LSCA_BLOCKS)}")
        self.num_classes, self.z_dim, self.unknown = int(num_classes), int(z_dim), unknown
        self.z_grid = (int(z_grid[0]), int(z_grid[1]))
        self.scales, self.stride = int(scales), 2 ** ups
        self.label_channels = num_classes + (1 if unknown == "channel" else 0)
        widths = [ngf * m for m in mults]
        self.fc = nn.Linear(z_dim, widths[0] * self.z_grid[0] * self.z_grid[1])
        self.global_encoder = GlobalEncoder(self.label_channels, global_channels, global_downs, spectral) if dgnorm else None

        def block(cin: int, cout: int) -> nn.Module:
            if dgnorm:
                return DGResBlock(cin, cout, self.label_channels, global_channels, hidden, spectral)
            return SPADEResBlock(cin, cout, self.label_channels, hidden, norm="batch", spectral=spectral)

        n = len(widths) - 1
        self.blocks = nn.ModuleList(block(widths[i], widths[i + 1]) for i in range(n))
        self.outputs = list(range(n - scales, n))          # blocks that end in an RGB head
        self.to_rgb = nn.ModuleList(nn.Conv2d(widths[i + 1], 3, 3, padding=1) for i in self.outputs)
        self.fused = list(range(n - LSCA_BLOCKS, n)) if lsca else []
        self.lsca = nn.ModuleList(LSCA(widths[i], widths[i + 1], self.label_channels, spectral) for i in self.fused)

    def forward(self, labels: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
        h, w = labels.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"label size {h}x{w} is not a multiple of the generator stride {self.stride}")
        seg = encode_labels(labels, self.num_classes, self.unknown)
        b = seg.shape[0]
        if z.shape != (b, self.z_dim):
            raise ValueError(f"z must be B x {self.z_dim}, got {tuple(z.shape)}")
        glob = self.global_encoder(seg) if self.global_encoder is not None else None
        conds: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

        def cond_at(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
            """(label, block condition) at ``size``, resized once per resolution."""
            if size not in conds:
                label = F.interpolate(seg, size=size, mode="nearest") if size != (h, w) else seg
                cond = label
                if glob is not None:
                    cond = torch.cat([label, F.interpolate(glob, size=size, mode="bilinear", align_corners=False)], 1)
                conds[size] = (label, cond)
            return conds[size]

        x = self.fc(z.to(seg.dtype)).view(b, -1, *self.z_grid)
        base = (h // self.stride, w // self.stride)
        if self.z_grid != base:
            x = F.interpolate(x, size=base, mode="bilinear", align_corners=False)
        images = []
        for i, block in enumerate(self.blocks):
            low = x
            if i >= 2:  # the first two blocks are the label encoder, at the base resolution
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            label, cond = cond_at(tuple(x.shape[-2:]))
            x = block(x, cond)
            if i in self.fused:
                x = self.lsca[self.fused.index(i)](low, x, label)
            if i in self.outputs:
                images.append(torch.tanh(self.to_rgb[self.outputs.index(i)](F.leaky_relu(x, 0.2))))
        return images


# --- discriminators ----------------------------------------------------------------------------


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, spectral: bool = True) -> nn.Module:
    padding = 1 if kernel == 4 else kernel // 2
    return maybe_spectral(nn.Conv2d(cin, cout, kernel, stride, padding), spectral)


class MiniInception(nn.Module):
    """Three parallel branches of growing receptive field (1x1; 1x1-3x3; 1x1-3x3-3x3),
    concatenated to ``channels`` (half, a quarter, a quarter), then LeakyReLU."""

    def __init__(self, channels: int, spectral: bool = True):
        super().__init__()
        c1, c2 = channels // 2, channels // 4
        c3 = channels - c1 - c2
        act = nn.LeakyReLU(0.2)
        self.branches = nn.ModuleList([
            _conv(channels, c1, 1, spectral=spectral),
            nn.Sequential(_conv(channels, c2, 1, spectral=spectral), act, _conv(c2, c2, 3, spectral=spectral)),
            nn.Sequential(_conv(channels, c3, 1, spectral=spectral), act, _conv(c3, c3, 3, spectral=spectral), act,
                          _conv(c3, c3, 3, spectral=spectral)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(torch.cat([branch(x) for branch in self.branches], dim=1), 0.2)


# VGG16 feature maps of the perceptual branch: pool3, pool4 and pool5 (the max-pooled last ReLU of
# stages 3, 4, 5), one per level.
PERCEPTUAL_LAYERS = ("relu3_3", "relu4_3", "relu5_3")
PERCEPTUAL_CHANNELS = (256, 512, 512)


class HPDiscriminator(nn.Module):
    """One hierarchical perceptual discriminator ``D_i`` with ``levels`` outputs (§3.2.1, Fig. 6).

    Main branch: three stride-2 4x4 convs to 1/8 and a mini-inception block; at
    each level the VGG feature of that resolution (``pool3`` at 1/8, ``pool4``
    at 1/16, ``pool5`` at 1/32) is concatenated, fused by a 3x3 conv and a
    mini-inception block, and a 3x3 conv gives the level's logit map; a stride-2
    conv leads to the next level. PatchGAN-style: no fully connected layer.

    ``forward(x, perceptual)`` -> ``(logits per level, intermediate features)``;
    ``perceptual`` holds the ``levels`` VGG maps of the image (``x`` may also
    carry label channels, which VGG never sees).
    """

    def __init__(self, in_channels: int, levels: int, ndf: int = 64, spectral: bool = True):
        super().__init__()
        if not 1 <= levels <= len(PERCEPTUAL_CHANNELS):
            raise ValueError(f"levels must be 1 to {len(PERCEPTUAL_CHANNELS)}, got {levels}")
        self.levels = int(levels)
        act = nn.LeakyReLU(0.2)
        widths = [4 * ndf, 8 * ndf, 8 * ndf][:levels]
        self.stem = nn.Sequential(_conv(in_channels, ndf, 4, 2, spectral), act, _conv(ndf, 2 * ndf, 4, 2, spectral), act,
                                  _conv(2 * ndf, widths[0], 4, 2, spectral), act, MiniInception(widths[0], spectral))
        self.down = nn.ModuleList(nn.Sequential(_conv(widths[k - 1], widths[k], 4, 2, spectral), act)
                                  for k in range(1, levels))
        self.fuse = nn.ModuleList(
            nn.Sequential(_conv(widths[k] + PERCEPTUAL_CHANNELS[k], widths[k], 3, spectral=spectral), act,
                          MiniInception(widths[k], spectral))
            for k in range(levels))
        self.heads = nn.ModuleList(_conv(widths[k], 1, 3, spectral=spectral) for k in range(levels))

    def forward(self, x: torch.Tensor, perceptual: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(perceptual) < self.levels:
            raise ValueError(f"D with {self.levels} levels needs {self.levels} VGG feature maps, got {len(perceptual)}")
        h = self.stem(x)
        logits, features = [], [h]
        for k in range(self.levels):
            if k:
                h = self.down[k - 1](h)
            v = perceptual[k]
            if v.shape[-2:] != h.shape[-2:]:  # sizes that are not multiples of 32 round differently
                v = F.interpolate(v, size=h.shape[-2:], mode="bilinear", align_corners=False)
            h = self.fuse[k](torch.cat([h, v.to(h.dtype)], dim=1))
            features.append(h)
            logits.append(self.heads[k](h))
        return logits, features


class PlainDiscriminator(nn.Module):
    """The ablation without HPD: one PatchGAN (:class:`~s2rcli.models.blocks.layers.PatchDiscriminator`,
    three stride-2 convs and spectral norm, no norm layer) with one output level and no VGG branch."""

    levels = 1

    def __init__(self, in_channels: int, ndf: int = 64, spectral: bool = True):
        super().__init__()
        self.patch = PatchDiscriminator(in_channels, ndf, n_layers=3, norm="none", spectral=spectral, pad_mode="zeros")

    def forward(self, x: torch.Tensor, perceptual: Sequence[torch.Tensor] = ()) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features = []
        for layer in self.patch.net:
            x = layer(x)
            features.append(x)
        return [features.pop()], features


def level_counts(scales: int) -> list[int]:
    """Output levels of ``D_1..D_n`` for ``scales`` images, coarse to fine: the finest has 3
    (``[1, 2, 3]`` for three scales, ``[2, 3]`` for two)."""
    return list(range(MAX_SCALES - scales + 1, MAX_SCALES + 1))


class Lab2PixDiscriminators(nn.Module):
    """``D_1..D_n``, one per image scale (coarse to fine), hierarchical perceptual or plain.

    Args:
        in_channels: image channels plus, for V2, the one-hot label's.
        scales: number of image scales (1 to 3).
        hpd: hierarchical perceptual discriminators; ``False``: :class:`PlainDiscriminator`.
        ndf: base width.
    """

    def __init__(self, in_channels: int, scales: int, hpd: bool = True, ndf: int = 64, spectral: bool = True):
        super().__init__()
        self.hpd = bool(hpd)
        self.levels = level_counts(scales) if hpd else [1] * scales
        self.nets = nn.ModuleList(HPDiscriminator(in_channels, n, ndf, spectral) if hpd
                                  else PlainDiscriminator(in_channels, ndf, spectral) for n in self.levels)

    def __len__(self) -> int:
        return len(self.nets)

    def forward(self, i: int, x: torch.Tensor, perceptual: Sequence[torch.Tensor] = ()):
        """``D_{i+1}`` on ``x``: ``(logits per level, features)``."""
        return self.nets[i](x, perceptual)


# --- the registered model ----------------------------------------------------------------------


class Lab2Pix(nn.Module):
    """A Lab2Pix generator as a label-to-image model (``lab2pix-v1`` and ``lab2pix-v2``).

    Holds ``G`` only: the discriminators, segmenters and VGGs are training
    machinery, built by the task (``task.py``). Inference: :meth:`generate`.
    """

    def __init__(self, label_space: str, num_classes: int | None, z_dim: int, z_grid: Sequence[int], ngf: int,
                 mults: Sequence[int], hidden: int, global_channels: int, global_downs: int, scales: int, lsca: bool,
                 dgnorm: bool, spectral: bool, unknown: str):
        super().__init__()
        self.label_space = label_space
        self.num_classes = int(num_classes) if num_classes is not None else get_label_space(label_space).num_classes
        self.kwargs = dict(label_space=label_space, num_classes=num_classes, z_dim=z_dim, z_grid=list(z_grid), ngf=ngf,
                           mults=list(mults), hidden=hidden, global_channels=global_channels,
                           global_downs=global_downs, scales=scales, lsca=lsca, dgnorm=dgnorm, spectral=spectral,
                           unknown=unknown)
        self.G = Lab2PixGenerator(self.num_classes, z_dim, z_grid, ngf, mults, hidden, global_channels, global_downs,
                                  scales, lsca, dgnorm, spectral, unknown)
        self.stride, self.z_dim, self.scales = self.G.stride, int(z_dim), int(scales)

    def sample_noise(self, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """``batch x z_dim`` standard normal noise, drawn on the generator's device when one is given
        (so a seed gives the same noise on every device)."""
        device = torch.device(device) if device is not None else self.G.fc.weight.device
        source = generator.device if generator is not None else device
        return torch.randn(batch, self.z_dim, generator=generator, device=source).to(device)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None,
                 z: torch.Tensor | None = None, *, all_scales: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Images for label maps (the generator in eval mode: batch norm uses its running statistics).

        Args:
            labels: int64 ``B x H x W`` in the model's label space (255 = ignore); H and W
                multiples of :attr:`stride`.
            generator: seeds the noise (same seed, same image).
            z: explicit ``B x z_dim`` noise.
            all_scales: return every output scale (coarse to fine) instead of the final image.

        Returns:
            ``B x 3 x H x W`` in [-1, 1] (or the list of scales).
        """
        labels = labels[None] if labels.dim() == 2 else labels
        h, w = labels.shape[-2:]
        if h % self.stride or w % self.stride:
            raise S2RError(f"label size {h}x{w} is not a multiple of the model's stride {self.stride}",
                           hint=f"pad or resize the labels to multiples of {self.stride}")
        device = self.G.fc.weight.device
        z = self.sample_noise(labels.shape[0], generator, device) if z is None else z.to(device)
        with evaluating(self.G):
            images = self.G(labels.to(device), z)
        return images if all_scales else images[-1]

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        """Load ``G`` (``G_ema`` when ``prefer_ema`` and present)."""
        for key in ("G_ema", "G") if prefer_ema else ("G",):
            if key in state_dicts:
                return self.G.load_state_dict(state_dicts[key])
        raise S2RError("the checkpoint holds no Lab2Pix generator weights (G or G_ema)",
                       hint="pass a checkpoint written by `s2r train lab2pix-v1` or `lab2pix-v2`")


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (batch norm on its running statistics) for the block, then back as it was."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
