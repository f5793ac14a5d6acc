"""``sis``: pragmatic synthetic-to-real semantic image synthesis (paper 000).

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
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ..console import warn
from ..data.labels import colorize, get_label_space
from ..errors import S2RError
from ..losses import gan
from ..losses.alignment import patch_grid, patchify, perceptual_distance
from ..losses.perceptual import VGGFeatures, vgg_relu_names
from ..training.data import make_pair_source
from ..training.task import Phase, TrainTask
from .registry import register_model
from .spade import NORMS, SPADEResBlock, haar_dwt, maybe_spectral

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

    Inference: :meth:`generate`. Training: :meth:`make_task`.
    """

    def __init__(
        self,
        label_space: str = "cityscapes19",
        num_classes: int | None = None,   # None: taken from label_space
        z_dim: int = 64,
        ngf: int = 64,
        g_mults: Sequence[int] = (16, 16, 16, 8, 4, 2, 1),
        spade_hidden: int = 128,
        norm: str = "instance",
        g_spectral: bool = True,
        unknown: str = "channel",
        du_channels: Sequence[int] = (64, 128, 256, 512, 512, 512),
        vgg_arch: str = "vgg16",
        d_layers: Sequence[str] = ("relu3_3", "relu4_3", "relu5_3"),
        dl_width: int = 256,
        dl_groups: int = 8,
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

    def make_task(self, cfg: dict[str, Any], data: dict[str, Any], dist, device) -> "SISTask":
        """The training task: data, optimisers, phases ``D``, ``D_r1`` (every ``r1_every`` steps) and ``G``."""
        return make_sis_task(self, cfg, data, dist, device)


# --- training ----------------------------------------------------------------------------------

DEFAULT_LOSS = {
    "gan_u": 1.0,    # G's non-saturating loss against the wavelet whole-image discriminator D_u
    "gan_l": 1.0,    # ... against the VGG-feature ensemble {D_l}, summed over its L members
    "align": 1.0,    # patch-wise perceptual alignment with the synthetic image (0 turns it off)
    "r1": 10.0,      # R1 gamma on D_u (applied as gamma / 2 * r1_every every r1_every steps)
}

DEFAULT_TRAIN = {
    "loss": DEFAULT_LOSS,
    "gan": "nonsaturating",
    "r1_every": 4,
    "align_patches": 4,             # Table III: 1 (config A), 4 (B, the paper's best), 16 (C)
    "disc_patches": [1, 4],         # Table IV: patches seen by [D_u, {D_l}]; [1, 4] is config E
    "align_layers": list(LPIPS_LAYERS),
    "vgg_weights": None,            # path, "random", or None for the cache / download
    "lr_d": None,                   # discriminators' lr (None: same as lr)
    "sample_draws": 3,              # noise draws per label in the sample grids
}


def sis_train_options(train_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The sis-specific training options with defaults filled in, validated."""
    opts = {**DEFAULT_TRAIN, **{k: v for k, v in train_cfg.items() if k in DEFAULT_TRAIN and v is not None}}
    opts["vgg_weights"] = train_cfg.get("vgg_weights")
    unknown_terms = set(train_cfg.get("loss") or {}) - set(DEFAULT_LOSS)
    if unknown_terms:
        raise S2RError(f"unknown sis loss terms {sorted(unknown_terms)}",
                       hint="valid: " + ", ".join(f"train.loss.{k}" for k in DEFAULT_LOSS))
    opts["loss"] = {**DEFAULT_LOSS, **(train_cfg.get("loss") or {})}
    for key, value in opts["loss"].items():
        if not isinstance(value, (int, float)) or value < 0:
            raise S2RError(f"train.loss.{key} must be a number >= 0, got {value!r}")
    try:
        patch_grid(opts["align_patches"])
        disc = [int(p) for p in opts["disc_patches"]]
        if len(disc) != 2:
            raise ValueError("two entries")
        for p in disc:
            patch_grid(p)
    except (ValueError, TypeError) as exc:
        raise S2RError(f"bad patch option ({exc})",
                       hint="train.align_patches is 1, 4, 9 or 16...; train.disc_patches is [D_u, D_l], e.g. [1, 4]") from None
    opts["disc_patches"] = disc
    if int(opts["r1_every"]) < 1:
        raise S2RError("train.r1_every must be >= 1")
    if opts["gan"] not in ("nonsaturating", "hinge", "lsgan"):
        raise S2RError(f"unknown train.gan {opts['gan']!r}", hint="nonsaturating (the paper's), hinge or lsgan")
    return opts


def check_training_size(size: Sequence[int], stride: int, align_patches: int, disc_patches: Sequence[int]) -> None:
    """Refuse a training size the generator, P(x) or the Haar transform cannot take."""
    h, w = int(size[0]), int(size[1])
    need = stride
    for p in (align_patches, *disc_patches):
        need = math.lcm(need, patch_grid(p))
    du_k = patch_grid(disc_patches[0])
    need = math.lcm(need, 2 * du_k)  # D_u's patches need an even size for the Haar transform
    if h % need or w % need:
        raise S2RError(f"training size {h}x{w} does not suit this sis configuration",
                       hint=f"use a size whose height and width are multiples of {need}, e.g. "
                            f"{max(need, h // need * need)}x{max(need, w // need * need)}")


class SISLoss:
    """The named loss terms of each phase; ``__call__(phase, batch)`` returns ``{"loss": total, term: value}``.

    Batches are ``{"a": synthetic images, "a_label": their labels, "b": real images}``
    (:class:`s2rcli.training.data.PairDataSource` with ``labels=True``).
    """

    def __init__(self, model: SIS, vgg: nn.Module, opts: Mapping[str, Any]):
        self.model, self.vgg = model, vgg
        self.weights = dict(opts["loss"])
        self.gan = opts["gan"]
        self.r1_every = int(opts["r1_every"])
        self.align_patches = int(opts["align_patches"])
        self.du_patches, self.dl_patches = (int(p) for p in opts["disc_patches"])
        self.align_layers = tuple(opts["align_layers"])
        self.d_layers = model.D_l.layers

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        out = dict(zip(self.vgg.layers, self.vgg(x)))
        return {name: out[name] for name in layers}

    def fake(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["a_label"]
        z = self.model.sample_noise(labels.shape[0], device=labels.device)
        return self.model.G(labels, z)

    def __call__(self, phase: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if phase == "D":
            return self.discriminator_terms(batch)
        if phase == "D_r1":
            return self.r1_terms(batch)
        if phase == "G":
            return self.generator_terms(batch)
        raise ValueError(f"sis has no phase {phase!r}")

    def discriminator_terms(self, batch):
        real = batch["b"]
        with torch.no_grad():
            fake = self.fake(batch)
        both = torch.cat([real, fake])
        n = real.shape[0]
        # Real and fake go through each network in one batch; the first rows are the real ones.
        real_u, fake_u = self.model.D_u(patchify(both, self.du_patches)).split(n * self.du_patches)
        adv_u = gan.d_loss(self.gan, real_u, fake_u)
        with torch.no_grad():
            feats = self.features(patchify(both, self.dl_patches), self.d_layers)
        adv_l = fake.new_zeros(())
        for logits in self.model.D_l(feats):
            real_l, fake_l = logits.split(n * self.dl_patches)
            adv_l = adv_l + gan.d_loss(self.gan, real_l, fake_l)
        return {"loss": adv_u + adv_l, "adv_u": adv_u.detach(), "adv_l": adv_l.detach(),
                "real_u": real_u.detach().mean(), "fake_u": fake_u.detach().mean()}

    def r1_terms(self, batch):
        real = patchify(batch["b"], self.du_patches).detach().requires_grad_(True)
        penalty = gan.r1_penalty(self.model.D_u(real), real)
        # Lazy regularisation: applied every r1_every steps, so scaled by the interval.
        return {"loss": self.weights["r1"] / 2 * self.r1_every * penalty, "r1": penalty.detach()}

    def generator_terms(self, batch):
        fake = self.fake(batch)
        w = self.weights
        adv_u = gan.g_loss(self.gan, self.model.D_u(patchify(fake, self.du_patches)))
        layers = list(dict.fromkeys([*self.d_layers, *self.align_layers]))
        shared = self.dl_patches == self.align_patches
        fake_d = self.features(patchify(fake, self.dl_patches), layers if shared else self.d_layers)
        adv_l = fake.new_zeros(())
        for logits in self.model.D_l(fake_d):
            adv_l = adv_l + gan.g_loss(self.gan, logits)
        with torch.set_grad_enabled(w["align"] > 0):
            fake_a = fake_d if shared else self.features(patchify(fake, self.align_patches), self.align_layers)
            with torch.no_grad():
                target = self.features(patchify(batch["a"], self.align_patches), self.align_layers)
            align = perceptual_distance([fake_a[k] for k in self.align_layers], [target[k] for k in self.align_layers])
        loss = w["gan_u"] * adv_u + w["gan_l"] * adv_l
        if w["align"] > 0:
            loss = loss + w["align"] * align
        return {"loss": loss, "adv_u": adv_u.detach(), "adv_l": adv_l.detach(), "align": align.detach()}


@dataclass
class SISTask(TrainTask):
    """:class:`TrainTask` of ``sis``: delegates to :class:`SISLoss` and draws sample grids."""

    criterion: SISLoss | None = None
    sample_draws: int = 3

    def loss(self, phase: str, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return self.criterion(phase, batch)

    @torch.no_grad()
    def samples(self, batch: Any, G: nn.Module | None = None) -> torch.Tensor:
        """Rows: label colours | synthetic image | ``sample_draws`` generated images (noise seeds 0, 1, ...)."""
        return sample_grid(self.model, batch["a_label"], batch["a"], draws=self.sample_draws, G=G)


@torch.no_grad()
def sample_grid(model: SIS, labels: torch.Tensor, synthetic: torch.Tensor | None = None, *, draws: int = 3,
                G: nn.Module | None = None) -> torch.Tensor:
    """An image grid ``3 x H' x W'`` in [0, 1]: per label map, its colours, the synthetic
    image (when given) and ``draws`` generated images with noise seeds ``0..draws-1``."""
    from torchvision.utils import make_grid

    G = G if G is not None else model.G
    device = next(G.parameters()).device
    labels = labels.to(device)
    colours = torch.stack([
        torch.from_numpy(np.ascontiguousarray(colorize(lab.cpu().numpy().astype(np.uint8), model.label_space)))
        .permute(2, 0, 1).float().div(255) for lab in labels
    ]).to(device)
    columns = [colours]
    if synthetic is not None:
        columns.append((synthetic.to(device) + 1) / 2)
    was_training = G.training
    G.eval()
    try:
        for seed in range(draws):
            z = model.sample_noise(labels.shape[0], torch.Generator().manual_seed(seed), device)
            columns.append((G(labels, z) + 1) / 2)
    finally:
        G.train(was_training)
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: one row per label map
    return make_grid(tiles.float().clamp(0, 1), nrow=len(columns), padding=2, pad_value=1.0)


def make_sis_task(model: SIS, cfg: dict[str, Any], data: dict[str, Any], dist, device) -> SISTask:
    """Build the sis :class:`SISTask` from a resolved run config (see :mod:`s2rcli.training.config`)."""
    train_cfg = cfg["train"]
    opts = sis_train_options(train_cfg)
    space = cfg.get("label_space") or model.label_space
    if space != model.label_space:  # the run's label space decides the number of classes
        model = SIS(**{**model.kwargs, "label_space": space, "num_classes": None})
    size = (cfg.get("data") or {}).get("size") or [256, 512]
    check_training_size(size, model.stride, opts["align_patches"], opts["disc_patches"])

    if opts["vgg_weights"] is not None and str(opts["vgg_weights"]) == "random":
        warn("sis with a random VGG: its feature discriminators and alignment loss are untrained "
             "feature maps; fine for tests and the CPU demo, not for real results")
    layers = list(dict.fromkeys([*model.D_l.layers, *opts["align_layers"]]))
    order = {name: i for i, name in enumerate(vgg_relu_names(model.vgg_arch))}
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise S2RError(f"unknown {model.vgg_arch} layers {unknown}", hint="valid: " + ", ".join(order))
    vgg = frozen_vgg(model.vgg_arch, sorted(layers, key=order.get), opts["vgg_weights"], device)

    lr = float(train_cfg.get("lr", 1e-4))
    lr_d = float(opts["lr_d"]) if opts["lr_d"] is not None else lr
    betas = tuple(float(b) for b in train_cfg.get("betas", (0.0, 0.999)))
    wd = float(train_cfg.get("weight_decay", 0.0))
    optimizers = {
        "G": torch.optim.Adam(model.G.parameters(), lr=lr, betas=betas, weight_decay=wd),
        "D": torch.optim.Adam([*model.D_u.parameters(), *model.D_l.parameters()], lr=lr_d, betas=betas, weight_decay=wd),
    }
    phases = [Phase("D", "D", ("D_u", "D_l"))]
    if opts["loss"]["r1"] > 0:
        phases.append(Phase("D_r1", "D", ("D_u",), every=int(opts["r1_every"])))
    phases.append(Phase("G", "G", ("G",)))
    return SISTask(
        model_name="sis",
        model_kwargs=dict(model.kwargs),
        model=model,
        nets={"G": model.G, "D_u": model.D_u, "D_l": model.D_l},
        phases=phases,
        optimizers=optimizers,
        data=make_pair_source(cfg, data, dist, labels=True),
        ema={"G_ema": "G"},
        label_space=space,
        monitor="G/align",
        criterion=SISLoss(model, vgg, opts),
        sample_draws=int(opts["sample_draws"]),
    )


_VGG_CACHE: dict[tuple, nn.Module] = {}


def frozen_vgg(arch: str, layers: Sequence[str], weights: str | None, device) -> nn.Module:
    """The frozen VGG feature extractor, built once per process for the same arguments
    (building it means initialising or reading ~500 MB of weights; it holds no state).

    A random VGG is drawn from a fixed seed, so it is the same function in every
    run: resumed runs continue exactly and runs with different seeds compare.
    """
    key = (arch, tuple(layers), None if weights is None else str(weights), str(torch.device(device)))
    if key not in _VGG_CACHE:
        _VGG_CACHE.clear()  # keep one: they are large
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _VGG_CACHE[key] = VGGFeatures(arch, tuple(layers), weights=weights).to(device)
    return _VGG_CACHE[key]


# --- registration ------------------------------------------------------------------------------

# tiny: small widths, and VGG16 only up to relu3_3 (a third of the CPU time of relu4_3 and beyond).
TINY_MODEL = dict(ngf=16, g_mults=[4, 4, 2, 1, 1], spade_hidden=32, du_channels=[32, 64, 64, 128],
                  d_layers=["relu2_2", "relu3_3"], dl_width=32, dl_groups=4)
PAPER_MODEL = dict(ngf=64, g_mults=[16, 16, 16, 8, 4, 2, 1], spade_hidden=128, du_channels=[64, 128, 256, 512, 512, 512],
                   d_layers=["relu3_3", "relu4_3", "relu5_3"], dl_width=256, dl_groups=8)

PRESETS = {
    "tiny": {
        "model": TINY_MODEL,
        "train": {
            "size": [64, 128], "steps": 2000, "batch_size": 2, "lr": 5e-4, "betas": [0.0, 0.999], "ema_decay": 0.99,
            "checkpoint_every": 500, "sample_every": 250, "log_every": 10,
            **DEFAULT_TRAIN, "align_layers": ["relu1_2", "relu2_2", "relu3_3"],
        },
    },
    "paper": {
        "model": PAPER_MODEL,
        "train": {
            "size": [256, 512], "steps": 200000, "batch_size": 2, "lr": 1e-4, "betas": [0.0, 0.999],
            "ema_decay": 0.9999, "workers": 4, "checkpoint_every": 5000, "sample_every": 1000, "log_every": 50,
            **DEFAULT_TRAIN,
        },
    },
}


@register_model("sis", kind="translation", input_kind="label", presets=PRESETS)
def sis(**kwargs: Any) -> SIS:
    """Pragmatic synthetic-to-real semantic image synthesis: labels + noise -> realistic image (paper 000)."""
    return SIS(**kwargs)
