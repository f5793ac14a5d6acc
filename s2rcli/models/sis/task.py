"""sis's training task: loss terms, phases (D, lazy R1, G), sample grids, presets and registration.

The networks are in ``network.py`` beside this file; the method is described in
``docs/sis.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.utils import make_grid

from ...console import warn
from ...data.labels import colorize
from ...data.pair_source import make_pair_source
from ...errors import S2RError
from ...losses import gan
from ...losses.alignment import patch_grid, patchify, perceptual_distance
from ...losses.perceptual import frozen_vgg, vgg_relu_names
from ..config import Preset, TrainConfig, field_names
from ..contract import Phase, TrainTask
from ..registry import register_model
from .network import LPIPS_LAYERS, SIS

DEFAULT_LOSS = {
    "gan_u": 1.0,    # G's non-saturating loss against the wavelet whole-image discriminator D_u
    "gan_l": 1.0,    # ... against the VGG-feature ensemble {D_l}, summed over its L members
    "align": 1.0,    # patch-wise perceptual alignment with the synthetic image (0 turns it off)
    "r1": 10.0,      # R1 gamma on D_u (applied as gamma / 2 * r1_every every r1_every steps)
}

@dataclass
class SISConfig:
    """sis's network settings (constructor arguments of :class:`SIS`); defaults: the paper's."""

    label_space: str = "cityscapes19"
    num_classes: int | None = None       # None: taken from label_space
    z_dim: int = 64                      # noise channels, broadcast over the image
    ngf: int = 64                        # generator base width
    g_mults: list[int] = field(default_factory=lambda: [16, 16, 16, 8, 4, 2, 1])  # width multipliers per block
    spade_hidden: int = 128
    norm: str = "instance"               # SPADE's parameter-free norm: instance, batch or none
    g_spectral: bool = True
    unknown: str = "channel"             # label 255 as an extra one-hot channel, or "zero"
    du_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 512, 512])  # wavelet D_u widths
    vgg_arch: str = "vgg16"
    d_layers: list[str] = field(default_factory=lambda: ["relu3_3", "relu4_3", "relu5_3"])  # taps of the D_l ensemble
    dl_width: int = 256
    dl_groups: int = 8


@dataclass
class SISTrain(TrainConfig):
    """sis's training options: the engine's plus the losses, R1 and the patch ablations."""

    batch_size: int = 2
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    loss: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS))
    gan: str = "nonsaturating"
    r1_every: int = 4
    align_patches: int = 4             # Table III: 1 (config A), 4 (B, the paper's best), 16 (C)
    generate_patches: int = 1          # Table III config D: G trains on P(m) patches only (4, with align_patches=1)
    disc_patches: list[int] = field(default_factory=lambda: [1, 4])  # Table IV: patches seen by [D_u, {D_l}]; [1, 4] is E
    align_layers: list[str] = field(default_factory=lambda: list(LPIPS_LAYERS))
    vgg_weights: str | None = None     # path, "random", or None for the cache / download
    lr_d: float | None = None          # discriminators' lr (None: same as lr)
    sample_draws: int = 3              # noise draws per label in the sample grids


# The options sis adds to the engine's, with their defaults.
SIS_OPTIONS = {name: value for name, value in dataclasses.asdict(SISTrain()).items()
               if name not in field_names(TrainConfig)}


def sis_train_options(train_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The sis-specific training options with defaults filled in, validated."""
    opts = {**SIS_OPTIONS, **{k: v for k, v in train_cfg.items() if k in SIS_OPTIONS and v is not None}}
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
        patch_grid(opts["generate_patches"])
        disc = [int(p) for p in opts["disc_patches"]]
        if len(disc) != 2:
            raise ValueError("two entries")
        for p in disc:
            patch_grid(p)
    except (ValueError, TypeError) as exc:
        raise S2RError(f"bad patch option ({exc})",
                       hint="train.align_patches and train.generate_patches are 1, 4, 9 or 16...; "
                            "train.disc_patches is [D_u, D_l], e.g. [1, 4]") from None
    opts["disc_patches"] = disc
    if int(opts["r1_every"]) < 1:
        raise S2RError("train.r1_every must be >= 1")
    if opts["gan"] not in ("nonsaturating", "hinge", "lsgan"):
        raise S2RError(f"unknown train.gan {opts['gan']!r}", hint="nonsaturating (the paper's), hinge or lsgan")
    return opts


def check_training_size(size: Sequence[int], stride: int, align_patches: int, disc_patches: Sequence[int],
                        generate_patches: int = 1) -> None:
    """Refuse a training size the generator, P(x) or the Haar transform cannot take."""
    h, w = int(size[0]), int(size[1])
    need = stride
    for p in (align_patches, *disc_patches):
        need = math.lcm(need, patch_grid(p))
    du_k = patch_grid(disc_patches[0])
    need = math.lcm(need, 2 * du_k)  # D_u's patches need an even size for the Haar transform
    need *= patch_grid(generate_patches)  # config D: every rule above applies to each generated patch
    if h % need or w % need:
        raise S2RError(f"training size {h}x{w} does not suit this sis configuration",
                       hint=f"use a size whose height and width are multiples of {need}, e.g. "
                            f"{max(need, h // need * need)}x{max(need, w // need * need)}")


class SISLoss:
    """The named loss terms of each phase; ``__call__(phase, batch)`` returns ``{"loss": total, term: value}``.

    Batches are ``{"a": synthetic images, "a_label": their labels, "b": real images}``
    (:class:`s2rcli.data.pair_source.PairDataSource` with ``labels=True``).
    """

    def __init__(self, model: SIS, vgg: nn.Module, opts: Mapping[str, Any]):
        self.model, self.vgg = model, vgg
        self.weights = dict(opts["loss"])
        self.gan = opts["gan"]
        self.r1_every = int(opts["r1_every"])
        self.align_patches = int(opts["align_patches"])
        self.generate_patches = int(opts["generate_patches"])
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
        if self.generate_patches > 1:
            batch = patch_batch(batch, self.generate_patches)
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


def patch_batch(batch: Mapping[str, torch.Tensor], patches: int) -> dict[str, torch.Tensor]:
    """Table III config D: every image and label map of the batch cut into ``patches`` images
    (:func:`~s2rcli.losses.alignment.patchify`), so the generator trains on patches only."""
    return {"a": patchify(batch["a"], patches), "b": patchify(batch["b"], patches),
            "a_label": patchify(batch["a_label"][:, None], patches)[:, 0]}


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
    check_training_size(size, model.stride, opts["align_patches"], opts["disc_patches"], opts["generate_patches"])

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


# --- registration ------------------------------------------------------------------------------

# tiny: small widths, and VGG16 only up to relu3_3 (a third of the CPU time of relu4_3 and beyond).
PRESETS = {
    "tiny": Preset(
        SISConfig(ngf=16, g_mults=[4, 4, 2, 1, 1], spade_hidden=32, du_channels=[32, 64, 64, 128],
                  d_layers=["relu2_2", "relu3_3"], dl_width=32, dl_groups=4),
        SISTrain(size=[64, 128], steps=2000, lr=5e-4, ema_decay=0.99, checkpoint_every=500, sample_every=250,
                 align_layers=["relu1_2", "relu2_2", "relu3_3"]),
    ),
    "paper": Preset(
        SISConfig(),
        SISTrain(size=[256, 512], steps=200000, ema_decay=0.9999, workers=4, checkpoint_every=5000,
                 sample_every=1000, log_every=50),
    ),
}


@register_model("sis", kind="translation", input_kind="label", presets=PRESETS, config=SISConfig, task=make_sis_task)
def sis(**kwargs: Any) -> SIS:
    """Pragmatic synthetic-to-real semantic image synthesis: labels + noise -> realistic image (Pragmatic SIS)."""
    return SIS(**kwargs)
