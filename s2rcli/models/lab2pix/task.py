"""Lab2Pix's training tasks: V1 (unpaired) and V2 (paired), their loss terms, presets and registrations.

The networks are in ``network.py`` beside this file; the method, our choices
and the ablation switches are described in ``docs/lab2pix.md``.

Shared by both (``Lab2PixLoss``):

* hierarchical adversarial loss (eqs. 10-13): for each discriminator ``D_i``,
  its levels weighted ``1, 1/2, 1/4`` and normalised, summed over ``i``; each
  level's per-pixel loss weighted by the **foreground-enhancement mask**
  (``T`` times the weight on foreground classes, normalised to mean 1 per image,
  average-pooled to the level's size);
* **sharpness loss** (eq. 16): real images, down- then up-sampled by 2, are
  shown to the discriminators as fakes, with the real term repeated at the same
  weight.

V1 adds the image-consistency loss between adjacent output scales (eq. 18) and
the cycle segmentation loss (eq. 19); V2 the VGG19 perceptual and the
discriminator feature-matching losses (eqs. 28, 29).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.utils import make_grid

from ...console import warn
from ...data.labels import colorize, get_label_space
from ...data.pair_source import make_pair_source
from ...data.seg_source import SegmentationData
from ...errors import S2RError
from ...losses import gan
from ...losses.perceptual import PerceptualLoss, frozen_vgg, vgg_relu_names
from ...losses.segmentation import cross_entropy
from ..config import Preset, TrainConfig
from ..contract import Phase, TrainTask
from ..registry import register_model
from ..segmenters.network import FastSeg
from ..sis.network import encode_labels
from .network import PERCEPTUAL_LAYERS, Lab2Pix, Lab2PixDiscriminators, evaluating

GAN_KINDS = ("nonsaturating", "hinge", "lsgan")
# Foreground classes of the enhancement mask, by name (whichever the run's label space has).
FOREGROUND = ["pole", "polegroup", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "caravan",
              "trailer", "train", "motorcycle", "bicycle"]
V1_LOSS = {
    "gan": 1.0,            # G's hierarchical adversarial loss (eq. 10)
    "sharpness": 1.0,      # lambda_2 of the sharpness loss (eq. 16), on the D side; ramped from 0 (train.sharpness_ramp)
    "consistency": 5e-6,   # lambda_3, image consistency between adjacent scales (eq. 18)
    "cycle_seg": 10.0,     # lambda_4, cycle segmentation (eq. 19)
}
V2_LOSS = {
    "gan": 1.0,
    "sharpness": 1.0,      # lambda_2 (eq. 30)
    "perceptual": 10.0,    # lambda_5, VGG19 perceptual loss (eq. 28)
    "feat_match": 10.0,    # lambda_6, discriminator feature matching (eq. 29)
}


@dataclass
class Lab2PixConfig:
    """Lab2Pix's generator settings (constructor arguments of :class:`Lab2Pix`); defaults: V1 of the paper."""

    label_space: str = "cityscapes19"
    num_classes: int | None = None        # None: taken from label_space
    z_dim: int = 128                      # the paper's 128-d noise
    z_grid: list[int] = field(default_factory=lambda: [4, 8])  # the FC layer's 3-D noise feature [h, w]
    ngf: int = 64
    mults: list[int] = field(default_factory=lambda: [16, 16, 16, 8, 4, 2, 1])  # noise, 2 encoder blocks, 4 up blocks
    hidden: int = 128                     # DG-Norm embedding width
    global_channels: int = 64             # global encoder width
    global_downs: int = 4                 # its stride-2 convs
    scales: int = 3                       # output images: 3 (V1) or 1 (V2)
    lsca: bool = True                     # ablation: model_kwargs.lsca=false
    dgnorm: bool = True                   # ablation: model_kwargs.dgnorm=false (SPADE on batch norm)
    spectral: bool = True
    unknown: str = "channel"              # label 255 as an extra one-hot channel, or "zero"


@dataclass
class Lab2PixTrain(TrainConfig):
    """Options shared by V1 and V2: discriminators, masks, sharpness, schedule."""

    lr: float = 2e-4
    gan: str = "nonsaturating"            # V1: vanilla (non-saturating); V2: hinge
    hpd: bool = True                      # hierarchical perceptual discriminators; false: one PatchGAN level per scale
    fe: bool = True                       # foreground-enhancement masks in the adversarial loss
    fe_t: float = 2.0                     # T: foreground weight over background (V1 2, V2 5)
    foreground: list[str] = field(default_factory=lambda: list(FOREGROUND))
    sharpness: bool = True                # the sharpness loss (down-up-sampled reals as fakes)
    sharpness_ramp: bool = True           # lambda_2 grows linearly from 0 to train.loss.sharpness over the run
    ndf: int = 64                         # discriminator base width
    d_spectral: bool = True
    lr_decay: bool = True                 # constant lr for the first half, then linearly to 0
    vgg_weights: str | None = None        # path, "random", or None for the cache / download
    sample_draws: int = 2                 # noise draws per label in the sample grids


@dataclass
class Lab2PixV1Train(Lab2PixTrain):
    """lab2pix-v1: Adam (0.5, 0.999); image consistency and cycle segmentation."""

    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    loss: dict[str, float] = field(default_factory=lambda: dict(V1_LOSS))
    consistency: bool = True
    cycle_seg: bool = True
    consistency_layers: list[str] = field(default_factory=lambda: ["relu1_2", "relu2_2", "relu3_2", "relu4_2",
                                                                   "relu5_2"])
    consistency_distance: str = "norm"    # eq. 18 as printed, ||.||_2; "squared": the sum of squares (see the docs)
    # The cycle segmenters S_1..S_3 (ERFNet-like fastseg; the paper uses ICNet).
    seg_widths: list[int] = field(default_factory=lambda: [16, 64, 128])
    seg_encoder_blocks: list[int] = field(default_factory=lambda: [5, 8])
    seg_decoder_blocks: list[int] = field(default_factory=lambda: [2, 2])


@dataclass
class Lab2PixV2Train(Lab2PixTrain):
    """lab2pix-v2: Adam (0, 0.9), hinge, T = 5; perceptual and feature matching."""

    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])
    gan: str = "hinge"
    fe_t: float = 5.0
    sharpness_ramp: bool = False
    loss: dict[str, float] = field(default_factory=lambda: dict(V2_LOSS))
    perceptual: bool = True
    feat_match: bool = True
    d_scales: int = 2                     # discriminated scales: 2 at 256x512, 3 at 512x1024 (the paper)
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1",
                                                                  "relu5_1"])
    vgg19_weights: str | None = None      # the perceptual loss's VGG19 (--vgg-weights names VGG16's file); None:
                                          # the cache / download, or random when --vgg-weights is random


def train_options(train_cfg: Mapping[str, Any], config: type, default_loss: Mapping[str, float]) -> dict[str, Any]:
    """The training options with the dataclass's defaults filled in, validated (user errors name the key)."""
    defaults = dataclasses.asdict(config())
    opts = {**defaults, **{k: v for k, v in train_cfg.items() if k in defaults and v is not None}}
    opts["vgg_weights"] = train_cfg.get("vgg_weights")
    unknown = set(train_cfg.get("loss") or {}) - set(default_loss)
    if unknown:
        raise S2RError(f"unknown loss terms {sorted(unknown)}", hint="valid: " + ", ".join(f"train.loss.{k}"
                                                                                           for k in default_loss))
    opts["loss"] = {**default_loss, **(train_cfg.get("loss") or {})}
    for key, value in opts["loss"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise S2RError(f"train.loss.{key} must be a number >= 0, got {value!r}")
    for key, value in opts.items():
        if isinstance(defaults.get(key), bool) and not isinstance(value, bool):
            raise S2RError(f"train.{key} must be true or false, got {value!r}")
    if opts["gan"] not in GAN_KINDS:
        raise S2RError(f"unknown train.gan {opts['gan']!r}", hint="valid: " + ", ".join(GAN_KINDS))
    if opts.get("consistency_distance", "norm") not in ("norm", "squared"):
        raise S2RError(f"train.consistency_distance must be norm or squared, got {opts['consistency_distance']!r}")
    if not float(opts["fe_t"]) >= 1:
        raise S2RError(f"train.fe_t must be >= 1, got {opts['fe_t']!r}", hint="T is the foreground weight over the "
                                                                                "background's (the paper: 2 for V1, 5 for V2)")
    return opts


# --- the pieces of the losses --------------------------------------------------------------------


def foreground_mask(labels: torch.Tensor, is_foreground: torch.Tensor, t: float) -> torch.Tensor:
    """The foreground-enhancement mask ``M_en`` (eq. 9): ``B x 1 x H x W``.

    Background pixels weigh ``P``, foreground ones ``T * P``, with
    ``P = (A + B) / (T * A + B)`` from each image's foreground (``A``) and
    background (``B``) pixel counts, so every image's mask has mean 1.
    ``is_foreground``: a bool lookup over label values 0..255 (255, ignore, is background).
    """
    fg = is_foreground.to(labels.device)[labels.long().clamp(0, 255)].float()
    a = fg.sum(dim=(1, 2))
    total = fg[0].numel()
    p = total / (t * a + (total - a))
    return (p[:, None, None] * (1 + (t - 1) * fg))[:, None]


def mask_at(mask: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor | None:
    """``W_i^l``: the mask average-pooled to a discriminator output's size, renormalised to mean 1."""
    if mask is None or tuple(mask.shape[-2:]) == tuple(size):
        return mask
    pooled = F.adaptive_avg_pool2d(mask, tuple(size))
    return pooled / pooled.mean(dim=(2, 3), keepdim=True)


def level_weights(levels: int) -> list[float]:
    """``lambda_il / sum_l lambda_il`` with ``lambda_i1 = 1`` and each next level half the previous."""
    raw = [0.5 ** k for k in range(levels)]
    return [w / sum(raw) for w in raw]


def hierarchical_adversarial(kind: str, outputs: Sequence[Sequence[torch.Tensor]], role: str,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i sum_l lambda_il / sum(lambda_i) * E[W_i^l * L(D_i^l)]`` (eqs. 10, 12, 13).

    ``outputs[i]``: the logit maps of ``D_i``'s levels; ``role``: ``real``, ``fake`` or
    ``generator`` (:func:`s2rcli.losses.gan.pointwise`); ``mask``: ``M_en`` or None (weight 1).
    """
    total = outputs[0][0].new_zeros(())
    for levels in outputs:
        for weight, logits in zip(level_weights(len(levels)), levels):
            loss = gan.pointwise(kind, logits, role)
            w = mask_at(mask, logits.shape[-2:])
            total = total + weight * (loss * w if w is not None else loss).mean()
    return total


def blur_by_resampling(x: torch.Tensor) -> torch.Tensor:
    """The sharpness loss's negatives ``Y^f``: ``x`` downscaled by 2 (area) and upscaled back (bilinear)."""
    return F.interpolate(F.avg_pool2d(x, 2), size=x.shape[-2:], mode="bilinear", align_corners=False)


def pyramid(x: torch.Tensor, scales: int) -> list[torch.Tensor]:
    """``x`` at ``scales`` resolutions, coarse to fine, each half the next (2x2 average pooling)."""
    out = [x]
    for _ in range(scales - 1):
        out.insert(0, F.avg_pool2d(out[0], 2))
    return out


def foreground_lookup(space: str, names: Sequence[str]) -> torch.Tensor:
    """A bool lookup over label values 0..255: True for the classes of ``space`` named in ``names``."""
    classes = get_label_space(space).class_names
    unknown = [n for n in names if n not in classes and n not in FOREGROUND]
    if unknown:
        raise S2RError(f"train.foreground names classes {unknown} that no label space has",
                       hint=f"classes of {space}: " + ", ".join(classes))
    lookup = torch.zeros(256, dtype=torch.bool)
    for i, name in enumerate(classes):
        lookup[i] = name in names
    return lookup


# --- the losses ------------------------------------------------------------------------------------


class Lab2PixLoss:
    """What V1 and V2 share: the discriminators' phase (adversarial and sharpness terms) and
    G's adversarial term. Subclasses say where labels and real images are in a batch, which
    generated images the discriminators see, and G's auxiliary terms.
    """

    paired = False

    def __init__(self, model: Lab2Pix, D: Lab2PixDiscriminators, vgg: nn.Module | None, opts: Mapping[str, Any],
                 space: str, steps: int):
        self.model, self.D, self.vgg = model, D, vgg
        self.kind, self.weights = opts["gan"], dict(opts["loss"])
        self.sharpness, self.ramp, self.steps = bool(opts["sharpness"]), bool(opts["sharpness_ramp"]), max(1, steps)
        self.fe, self.fe_t = bool(opts["fe"]), float(opts["fe_t"])
        self.is_foreground = foreground_lookup(space, opts["foreground"])
        self.scales = len(D)

    # -- what the subclasses define --
    def inputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, real images)`` of a batch."""
        raise NotImplementedError  # abstract: V1 and V2 define it

    def fakes(self, labels: torch.Tensor) -> list[torch.Tensor]:
        """Generated images at the discriminators' scales, coarse to fine."""
        raise NotImplementedError  # abstract: V1 and V2 define it

    # -- shared pieces --
    def sharpness_weight(self, step: int) -> float:
        """lambda_2 at ``step``: ramped linearly from 0 over the run (V1's semantic setting), or constant."""
        weight = self.weights["sharpness"]
        return weight * min(1.0, step / self.steps) if self.ramp else weight

    def mask(self, labels: torch.Tensor) -> torch.Tensor | None:
        return foreground_mask(labels, self.is_foreground, self.fe_t) if self.fe else None

    def onehot(self, labels: torch.Tensor) -> torch.Tensor:
        return encode_labels(labels, self.model.num_classes, self.model.G.unknown)

    def vgg_features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The frozen VGG16's activations of ``layers`` (it stops at the deepest)."""
        layers = list(dict.fromkeys(layers))
        return dict(zip(layers, self.vgg(images, layers))) if layers else {}

    def branch_layers(self, i: int) -> list[str]:
        """The VGG16 layers of ``D_i``'s perceptual branch: one per level (none without HPD)."""
        return list(PERCEPTUAL_LAYERS[:self.D.levels[i]]) if self.D.hpd else []

    def discriminate(self, i: int, images: torch.Tensor, seg: torch.Tensor | None,
                     features: Mapping[str, torch.Tensor] | None = None):
        """``D_i`` on ``images`` (with the one-hot label concatenated when paired). Its perceptual
        branch gets pool3/pool4/pool5 of the images' VGG16 features, computed unless given."""
        if features is None:
            with torch.no_grad():
                features = self.vgg_features(images, self.branch_layers(i))
        maps = [F.max_pool2d(features[name], 2) for name in self.branch_layers(i)]
        x = images
        if self.paired:
            x = torch.cat([images, F.interpolate(seg, size=images.shape[-2:], mode="nearest").to(images.dtype)], 1)
        return self.D(i, x, maps)

    def __call__(self, phase: str, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        if phase == "D":
            return self.discriminator_terms(batch, step)
        if phase == "G":
            return self.generator_terms(batch, step)
        raise ValueError(f"lab2pix has no phase {phase!r}")

    def discriminator_terms(self, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        labels, real = self.inputs(batch)
        n = real.shape[0]
        with torch.no_grad():
            fakes = [x.detach() for x in self.fakes(labels)]
        reals = pyramid(real, self.scales)
        seg = self.onehot(labels) if self.paired else None
        parts: dict[str, list[list[torch.Tensor]]] = {"real": [], "fake": [], "blurred": []}
        for i, (y, x) in enumerate(zip(reals, fakes)):
            rows = [y, x] + ([blur_by_resampling(y)] if self.sharpness else [])
            images = torch.cat(rows)  # one pass of every D_i: real, generated, blurred real
            logits, _ = self.discriminate(i, images, seg.repeat(len(rows), 1, 1, 1) if seg is not None else None)
            split = [level.split(n) for level in logits]
            for k, key in enumerate(list(parts)[:len(rows)]):
                parts[key].append([level[k] for level in split])
        mask = self.mask(labels)
        real_mask = mask if self.paired else None  # unpaired real images have no label map (eq. 13)
        real_loss = hierarchical_adversarial(self.kind, parts["real"], "real", real_mask)
        fake_loss = hierarchical_adversarial(self.kind, parts["fake"], "fake", mask)
        adv = 0.5 * (real_loss + fake_loss)
        terms = {"adv": adv.detach(), "real": parts["real"][-1][0].detach().mean(),
                 "fake": parts["fake"][-1][0].detach().mean()}
        loss = adv
        if self.sharpness:
            sharp = 0.5 * (real_loss + hierarchical_adversarial(self.kind, parts["blurred"], "fake", real_mask))
            loss = loss + self.sharpness_weight(step) * sharp
            terms["sharpness"] = sharp.detach()
        return {"loss": loss, **terms}

    def adversarial(self, fakes: Sequence[torch.Tensor], labels: torch.Tensor,
                    features: Sequence[Mapping[str, torch.Tensor]]):
        """G's hierarchical adversarial loss and each D_i's intermediate features of the fakes."""
        seg = self.onehot(labels) if self.paired else None
        outputs, d_features = [], []
        for i, x in enumerate(fakes):
            logits, feats = self.discriminate(i, x, seg, features[i])
            outputs.append(logits)
            d_features.append(feats)
        return hierarchical_adversarial(self.kind, outputs, "generator", self.mask(labels)), d_features

    def generator_terms(self, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # abstract: V1 and V2 define it


class Lab2PixV1Loss(Lab2PixLoss):
    """V1 (unpaired): batches ``{"a_label": synthetic labels, "b": real images}``; G's terms are
    the adversarial loss, image consistency (VGG16, eq. 18) and cycle segmentation (eq. 19)."""

    def __init__(self, model: Lab2Pix, D: Lab2PixDiscriminators, S: nn.ModuleList | None, vgg: nn.Module | None,
                 opts: Mapping[str, Any], space: str, steps: int):
        super().__init__(model, D, vgg, opts, space, steps)
        self.S = S
        self.consistency = bool(opts["consistency"])
        self.consistency_layers = tuple(opts["consistency_layers"])
        self.squared = opts["consistency_distance"] == "squared"

    def inputs(self, batch):
        return batch["a_label"], batch["b"]

    def fakes(self, labels):
        z = self.model.sample_noise(labels.shape[0], device=labels.device)
        return self.model.G(labels, z)

    def consistency_loss(self, fakes: Sequence[torch.Tensor], features: Sequence[Mapping[str, torch.Tensor]]):
        """``sum_i sum_l ||phi_l(P_2(X_{i+1})) - phi_l(X_i)||_2`` (eq. 18), averaged over the batch
        (its square, summed over the feature map, with ``consistency_distance="squared"``)."""
        total = fakes[0].new_zeros(())
        for i in range(len(fakes) - 1):
            pooled = self.vgg_features(F.avg_pool2d(fakes[i + 1], 2), self.consistency_layers)
            for name in self.consistency_layers:
                diff = (pooled[name] - features[i][name]).flatten(1)
                distance = diff.pow(2).sum(dim=1) if self.squared else torch.linalg.vector_norm(diff, dim=1)
                total = total + distance.mean()
        return total

    def cycle_segmentation(self, fakes: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """``sum_i CE(S_i(X_i), M)`` (eq. 19), the label resized (nearest) to each scale."""
        total = fakes[0].new_zeros(())
        for segmenter, x in zip(self.S, fakes):
            target = F.interpolate(labels[:, None].float(), size=x.shape[-2:], mode="nearest")[:, 0].long()
            total = total + cross_entropy(segmenter(x), target)
        return total

    def generator_terms(self, batch, step):
        labels, _ = self.inputs(batch)
        fakes = self.fakes(labels)
        # One VGG pass per scale serves D's perceptual branch and the consistency loss.
        features = [self.vgg_features(x, self.branch_layers(i) + (list(self.consistency_layers) if self.consistency
                                                                   and i < len(fakes) - 1 else []))
                    for i, x in enumerate(fakes)]
        adv, _ = self.adversarial(fakes, labels, features)
        w = self.weights
        loss, terms = w["gan"] * adv, {"adv": adv.detach()}
        if self.consistency:
            consistency = self.consistency_loss(fakes, features)
            loss = loss + w["consistency"] * consistency
            terms["consistency"] = consistency.detach()
        if self.S is not None:
            seg = self.cycle_segmentation(fakes, labels)
            loss = loss + w["cycle_seg"] * seg
            terms["cycle_seg"] = seg.detach()
        return {"loss": loss, **terms}


class Lab2PixV2Loss(Lab2PixLoss):
    """V2 (paired): batches ``{"label": label maps, "image": their real images}``; the
    discriminators see the label with the image; G's terms are the adversarial loss, the VGG19
    perceptual loss (eq. 28) and discriminator feature matching (eq. 29)."""

    paired = True

    def __init__(self, model: Lab2Pix, D: Lab2PixDiscriminators, vgg: nn.Module | None,
                 perceptual: PerceptualLoss | None, opts: Mapping[str, Any], space: str, steps: int):
        super().__init__(model, D, vgg, opts, space, steps)
        self.perceptual = perceptual
        self.feat_match = bool(opts["feat_match"])

    def inputs(self, batch):
        return batch["label"], batch["image"]

    def fakes(self, labels):
        z = self.model.sample_noise(labels.shape[0], device=labels.device)
        return pyramid(self.model.G(labels, z)[-1], self.scales)

    def generator_terms(self, batch, step):
        labels, real = self.inputs(batch)
        fakes = self.fakes(labels)
        reals = pyramid(real, self.scales)
        features = [self.vgg_features(x, self.branch_layers(i)) for i, x in enumerate(fakes)]
        adv, fake_d = self.adversarial(fakes, labels, features)
        w = self.weights
        loss, terms = w["gan"] * adv, {"adv": adv.detach()}
        if self.perceptual is not None:
            perceptual = sum(self.perceptual(x, y) for x, y in zip(fakes, reals))
            loss = loss + w["perceptual"] * perceptual
            terms["perceptual"] = perceptual.detach()
        if self.feat_match:
            seg = self.onehot(labels)
            matching = fakes[0].new_zeros(())
            for i, (y, fake_feats) in enumerate(zip(reals, fake_d)):
                with torch.no_grad():
                    _, real_feats = self.discriminate(i, y, seg)
                matching = matching + sum(F.l1_loss(f, r) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
            loss = loss + w["feat_match"] * matching
            terms["feat_match"] = matching.detach()
        return {"loss": loss, **terms}


# --- the task ----------------------------------------------------------------------------------------


@dataclass
class Lab2PixTask(TrainTask):
    """:class:`TrainTask` of both versions: phases ``D`` then ``G``; sample grids."""

    criterion: Lab2PixLoss | None = None
    sample_draws: int = 2

    def loss(self, phase: str, batch: Any, step: int) -> dict[str, torch.Tensor]:
        return self.criterion(phase, batch, step)

    @torch.no_grad()
    def samples(self, batch: Any, G: nn.Module | None = None) -> torch.Tensor:
        """Rows: label colours | reference image (synthetic for V1, the real one for V2) |
        (V1: the coarser scales of draw 0, upsampled) | the final image of each noise draw."""
        labels, reference = (batch["a_label"], batch["a"]) if "a_label" in batch else (batch["label"], batch["image"])
        return sample_grid(self.model, labels, reference, draws=self.sample_draws, G=G)


@torch.no_grad()
def sample_grid(model: Lab2Pix, labels: torch.Tensor, reference: torch.Tensor | None = None, *, draws: int = 2,
                G: nn.Module | None = None) -> torch.Tensor:
    """An image grid ``3 x H' x W'`` in [0, 1]; noise seeds ``0..draws-1``, the generator in eval mode."""
    G = G if G is not None else model.G
    device = G.fc.weight.device
    labels = labels.to(device)
    palette = colorize(labels.cpu().numpy().astype(np.uint8), model.label_space)  # B x H x W x 3
    columns = [torch.from_numpy(np.ascontiguousarray(palette)).permute(0, 3, 1, 2).float().div(255).to(device)]
    if reference is not None:
        columns.append((reference.to(device) + 1) / 2)
    with evaluating(G):
        for seed in range(draws):
            images = G(labels, model.sample_noise(labels.shape[0], torch.Generator().manual_seed(seed), device))
            if seed == 0:
                columns += [(F.interpolate(x, size=labels.shape[-2:], mode="nearest") + 1) / 2 for x in images[:-1]]
            columns.append((images[-1] + 1) / 2)
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: one row per label map
    return make_grid(tiles.float().clamp(0, 1), nrow=len(columns), padding=2, pad_value=1.0)


class LabelledImages(SegmentationData):
    """V2's data: labelled real images (``{"image", "label"}`` batches, augmented, deterministic by
    draw), plus the fixed, unaugmented batch of the sample grids."""

    def __iter__(self):
        # Starting a DataLoader draws its base seed from torch's global RNG. The loop starts the
        # iterator at step 0, or at the resumed step; kept off the global stream, the generator's
        # noise after a resume is the noise the uninterrupted run drew.
        batches = super().__iter__()
        while True:
            with torch.random.fork_rng(devices=[]):
                batch = next(batches)
            yield batch

    def fixed_batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        picks = np.unique(np.linspace(0, len(self.items) - 1, n).round().astype(int))
        return torch.utils.data.default_collate([self.items[int(i)] for i in picks])


def check_training_size(size: Sequence[int], stride: int, scales: int, vgg_uses: Mapping[str, Sequence[str]]) -> None:
    """Refuse a size the generator, the discriminators (down to 1/32) or a VGG loss cannot take.

    ``vgg_uses``: what -> VGG layers it reads on the coarsest scale.
    """
    h, w = int(size[0]), int(size[1])
    need = math.lcm(stride, 32)
    if h % need or w % need:
        raise S2RError(f"training size {h}x{w} does not suit this Lab2Pix configuration",
                       hint=f"use a size whose height and width are multiples of {need} (generator stride {stride}; "
                            f"the discriminators go down to 1/32), e.g. {max(need, h // need * need)}x"
                            f"{max(need, w // need * need)}")
    coarsest = min(h, w) // 2 ** (scales - 1)
    for what, layers in vgg_uses.items():
        stage = max((int(name[4]) for name in layers), default=1)
        if coarsest < 2 ** (stage - 1):
            raise S2RError(f"training size {h}x{w} is too small for the {what} layers {list(layers)}: the coarsest "
                           f"scale, {coarsest} pixels, is pooled away before stage {stage} of VGG",
                           hint=f"train at a size whose shorter side is at least {2 ** (stage - 1 + scales - 1)}, or "
                                f"use shallower layers")


def _optimizers_and_schedules(nets: Mapping[str, Sequence[nn.Module]], opts: Mapping[str, Any], steps: int):
    lr, betas = float(opts["lr"]), tuple(float(b) for b in opts["betas"])
    wd = float(opts.get("weight_decay", 0.0))
    optimizers = {name: torch.optim.Adam([p for m in modules for p in m.parameters()], lr=lr, betas=betas,
                                         weight_decay=wd) for name, modules in nets.items()}
    schedulers = {}
    if opts["lr_decay"]:
        half = max(1, steps) / 2

        def decay(step: int) -> float:  # the paper: constant, then linearly to 0 over the second half
            return max(0.0, min(1.0, (steps - step) / half))

        schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, decay) for name, opt in optimizers.items()}
    return optimizers, schedulers


def _model_for_space(model: Lab2Pix, cfg: Mapping[str, Any]) -> tuple[Lab2Pix, str]:
    space = cfg.get("label_space") or model.label_space
    if space != model.label_space:  # the run's label space decides the number of classes
        model = Lab2Pix(**{**model.kwargs, "label_space": space, "num_classes": None})
    return model, space


def _vgg(arch: str, layers: Sequence[str], weights: str | None, device, what: str) -> nn.Module | None:
    if not layers:
        return None
    order = {name: i for i, name in enumerate(vgg_relu_names(arch))}
    unknown = [name for name in layers if name not in order]
    if unknown:
        raise S2RError(f"unknown {arch} layers {unknown} for the {what}", hint="valid: " + ", ".join(order))
    return frozen_vgg(arch, sorted(set(layers), key=order.get), weights, device)


def _warn_random_vgg(opts: Mapping[str, Any]) -> None:
    if opts["vgg_weights"] is not None and str(opts["vgg_weights"]) == "random":
        warn("lab2pix with a random VGG: its perceptual discriminator branch and VGG losses see untrained "
             "feature maps; fine for tests and the CPU demo, not for real results")


def make_v1_task(model: Lab2Pix, cfg: dict[str, Any], data: dict[str, Any], dist, device) -> Lab2PixTask:
    """The lab2pix-v1 task (unpaired: synthetic labels, unlabelled real images)."""
    opts = train_options(cfg["train"], Lab2PixV1Train, V1_LOSS)
    model, space = _model_for_space(model, cfg)
    if model.scales < 2:
        raise S2RError("lab2pix-v1 discriminates its generator's scales, but model_kwargs.scales is 1",
                       hint="use model_kwargs.scales=3 (the paper's), or lab2pix-v2 for a single output")
    steps = int(opts["steps"])
    hpd_layers = list(PERCEPTUAL_LAYERS) if opts["hpd"] else []
    consistency_layers = list(opts["consistency_layers"]) if opts["consistency"] else []
    check_training_size((cfg.get("data") or {}).get("size") or [256, 512], model.stride, model.scales,
                        {"consistency": consistency_layers})
    _warn_random_vgg(opts)
    vgg = _vgg("vgg16", hpd_layers + consistency_layers, opts["vgg_weights"], device, "VGG16 branch and consistency")
    D = Lab2PixDiscriminators(3, model.scales, hpd=opts["hpd"], ndf=int(opts["ndf"]), spectral=opts["d_spectral"])
    S = None
    if opts["cycle_seg"]:
        S = nn.ModuleList(FastSeg(model.num_classes, opts["seg_widths"], opts["seg_encoder_blocks"],
                                  opts["seg_decoder_blocks"], [0.0, 0.0]) for _ in range(model.scales))
    nets = {"G": model.G, "D": D, **({"S": S} if S is not None else {})}
    optimizers, schedulers = _optimizers_and_schedules(
        {"G": [model.G] + ([S] if S is not None else []), "D": [D]}, opts, steps)
    return Lab2PixTask(
        model_name="lab2pix-v1", model_kwargs=dict(model.kwargs), model=model, nets=nets,
        phases=[Phase("D", "D", ("D",)), Phase("G", "G", ("G", "S") if S is not None else ("G",))],
        optimizers=optimizers, schedulers=schedulers, data=make_pair_source(cfg, data, dist, labels=True),
        ema={"G_ema": "G"}, label_space=space, monitor="G/cycle_seg" if S is not None else None,
        criterion=Lab2PixV1Loss(model, D, S, vgg, opts, space, steps), sample_draws=int(opts["sample_draws"]),
    )


def make_v2_task(model: Lab2Pix, cfg: dict[str, Any], data: dict[str, Any], dist, device) -> Lab2PixTask:
    """The lab2pix-v2 task (paired: labelled real images)."""
    opts = train_options(cfg["train"], Lab2PixV2Train, V2_LOSS)
    model, space = _model_for_space(model, cfg)
    if (cfg.get("data") or {}).get("synthetic"):
        warn("lab2pix-v2 trains on labelled real images alone (--real); --synthetic is not used")
    scales = int(opts["d_scales"])
    if not 1 <= scales <= 3:
        raise S2RError(f"train.d_scales must be 1, 2 or 3, got {scales}")
    steps = int(opts["steps"])
    size = (cfg.get("data") or {}).get("size") or [256, 512]
    hpd_layers = list(PERCEPTUAL_LAYERS) if opts["hpd"] else []
    perceptual_layers = list(opts["perceptual_layers"]) if opts["perceptual"] else []
    check_training_size(size, model.stride, scales, {"perceptual loss": perceptual_layers})
    _warn_random_vgg(opts)
    vgg16 = _vgg("vgg16", hpd_layers, opts["vgg_weights"], device, "VGG16 branch")
    vgg19_weights = opts["vgg19_weights"]
    if vgg19_weights is None and str(opts["vgg_weights"]) == "random":
        vgg19_weights = "random"
    vgg19 = _vgg("vgg19", perceptual_layers, vgg19_weights, device, "perceptual loss")
    # eq. 28's weights 1/32 ... 1 for the five layers; the deepest layers keep the largest weights
    perceptual = PerceptualLoss(vgg19, [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0][-len(vgg19.layers):]) if vgg19 else None
    label_channels = model.G.label_channels
    D = Lab2PixDiscriminators(3 + label_channels, scales, hpd=opts["hpd"], ndf=int(opts["ndf"]),
                              spectral=opts["d_spectral"])
    real = data["real"]
    source = LabelledImages([real] if not isinstance(real, (list, tuple)) else list(real), size=size,
                            batch_size=int(cfg["train"]["batch_size"]), seed=int(cfg.get("seed", 0)),
                            flip=bool((cfg.get("data") or {}).get("flip", True)), workers=int(opts["workers"]),
                            crop_scale=(1.0, 1.0), rank=dist.rank, world_size=dist.world_size)
    optimizers, schedulers = _optimizers_and_schedules({"G": [model.G], "D": [D]}, opts, steps)
    return Lab2PixTask(
        model_name="lab2pix-v2", model_kwargs=dict(model.kwargs), model=model, nets={"G": model.G, "D": D},
        phases=[Phase("D", "D", ("D",)), Phase("G", "G", ("G",))], optimizers=optimizers, schedulers=schedulers,
        data=source, ema={"G_ema": "G"}, label_space=space,
        monitor="G/perceptual" if perceptual is not None else None,
        criterion=Lab2PixV2Loss(model, D, vgg16, perceptual, opts, space, steps), sample_draws=int(opts["sample_draws"]),
    )


# --- registration ----------------------------------------------------------------------------------

# tiny: small widths, stride 8, consistency up to relu3_2; sized for 32x64 and 64x128 on a CPU.
TINY_G = dict(z_dim=64, ngf=16, mults=[4, 4, 4, 2, 1, 1], hidden=32, global_channels=32, global_downs=3)
TINY_SEG = dict(seg_widths=[8, 16, 32], seg_encoder_blocks=[1, 2], seg_decoder_blocks=[1, 1])
TINY_TRAIN = dict(size=[64, 128], steps=2000, ndf=16, ema_decay=0.99, checkpoint_every=500, sample_every=250)

V1_PRESETS = {
    "tiny": Preset(Lab2PixConfig(**TINY_G), Lab2PixV1Train(**TINY_TRAIN, **TINY_SEG, batch_size=2,
                                                            consistency_layers=["relu1_2", "relu2_2", "relu3_2"])),
    "paper": Preset(Lab2PixConfig(), Lab2PixV1Train(size=[256, 512], batch_size=1, steps=297500, ema_decay=0.999,
                                                    workers=4, checkpoint_every=5000, sample_every=1000, log_every=50)),
}
V2_PRESETS = {
    "tiny": Preset(Lab2PixConfig(**TINY_G, scales=1, lsca=False),
                   Lab2PixV2Train(**TINY_TRAIN, batch_size=2, perceptual_layers=["relu1_1", "relu2_1", "relu3_1"])),
    "paper": Preset(Lab2PixConfig(scales=1, lsca=False),
                    Lab2PixV2Train(size=[256, 512], batch_size=20, steps=29750, ema_decay=0.999, workers=8,
                                   checkpoint_every=2000, sample_every=500, log_every=50)),
}


@register_model("lab2pix-v1", kind="translation", input_kind="label", presets=V1_PRESETS, config=Lab2PixConfig,
                task=make_v1_task, data=("synthetic", "real"), labelled=("synthetic",))
def lab2pix_v1(**kwargs: Any) -> Lab2Pix:
    """Lab2Pix-V1: unpaired label-to-image, 3 output scales, DG-Norm, LSCA, hierarchical perceptual Ds."""
    return Lab2Pix(**kwargs)


@register_model("lab2pix-v2", kind="translation", input_kind="label", presets=V2_PRESETS, config=Lab2PixConfig,
                task=make_v2_task, data=("real",), labelled=("real",))
def lab2pix_v2(**kwargs: Any) -> Lab2Pix:
    """Lab2Pix-V2: paired label-to-image (labelled real images), label-conditioned hierarchical Ds."""
    return Lab2Pix(**kwargs)
