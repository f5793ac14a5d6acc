"""UNIT's training task: the loss terms, the D/G phases, the presets and the registration.

The networks are in ``network.py`` beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.utils import make_grid

from ... import pretrained
from ...console import warn
from ...data.pair_source import make_pair_source
from ...data.labels import get_label_space
from ...errors import S2RError
from ...losses import gan
from ...losses.perceptual import VGGFeatures
from ...losses.segmentation import IGNORE_INDEX, cross_entropy
from ..config import Preset, TrainConfig
from ..contract import Phase, TrainTask
from ..registry import create_model, register_model
from .network import UNIT, UNITGenerator

LOSS_WEIGHTS = {"gan": 1.0, "recon_x": 10.0, "recon_kl": 0.01, "cyc_x": 10.0, "cyc_kl": 0.01, "vgg": 0.0, "sem": 0.0}


def make_unit_task(model: UNIT, cfg: dict[str, Any], data: dict[str, Any], dist, device) -> "UNITTask":
    """Build the UNIT training task from a resolved run config."""
    train = cfg["train"]
    weights = {**LOSS_WEIGHTS, **train.get("loss", {})}
    unknown = sorted(set(weights) - set(LOSS_WEIGHTS))
    if unknown:
        raise S2RError(f"unknown UNIT loss terms {unknown}", hint="valid: " + ", ".join(LOSS_WEIGHTS))
    vgg = None
    if weights["vgg"] > 0:
        choice = train.get("vgg_weights")
        if choice not in (None, "random"):
            pretrained.resolve_weights("vgg16", choice)  # fail on a bad path before building anything
        vgg = InstanceNormVGG(choice).to(device)
    elif train.get("vgg_weights"):
        warn("--vgg-weights is given but the perceptual term is off; enable it with --set train.loss.vgg=1")
    noise = float(train.get("vae_noise", 1.0))
    if noise < 0:
        raise S2RError(f"train.vae_noise must be >= 0, got {noise}")
    semantic = weights["sem"] > 0
    aux = None
    if semantic:  # an auxiliary segmenter, trained on the synthetic labels alongside (see UNITLoss.s_terms)
        classes = get_label_space(cfg.get("label_space") or "cityscapes19").num_classes
        aux = create_model(str(train.get("sem_segmenter", "fastseg")), preset="tiny", num_classes=classes)
    criterion = UNITLoss(model.G, model.D, weights, gan_mode=train.get("gan_mode", "lsgan"), vgg=vgg,
                         noise=noise, segmenter=aux)
    lr, betas, wd = float(train["lr"]), tuple(train["betas"]), float(train["weight_decay"])
    optimizers = {
        "G": torch.optim.Adam(model.G.parameters(), lr=lr, betas=betas, weight_decay=wd),
        "D": torch.optim.Adam(model.D.parameters(), lr=lr, betas=betas, weight_decay=wd),
    }
    nets: dict[str, nn.Module] = {"G": model.G, "D": model.D}
    phases = [Phase("D", optimizer="D", nets=("D",)), Phase("G", optimizer="G", nets=("G",))]
    if aux is not None:
        nets["S"] = aux
        optimizers["S"] = torch.optim.Adam(aux.parameters(), lr=float(train.get("sem_lr", 1e-3)), betas=(0.9, 0.999))
        phases.insert(0, Phase("S", optimizer="S", nets=("S",)))
    schedulers = {
        name: torch.optim.lr_scheduler.StepLR(opt, step_size=int(train.get("lr_step", 100000)),
                                              gamma=float(train.get("lr_gamma", 0.5)))
        for name, opt in optimizers.items()
    }
    source = make_pair_source(cfg, data, dist, labels=semantic)
    return UNITTask(
        model_name=cfg["model"], model_kwargs=dict(cfg["model_kwargs"]), model=model,
        nets=nets, phases=phases, optimizers=optimizers, schedulers=schedulers, data=source, ema={"G_ema": "G"},
        label_space=cfg.get("label_space"), monitor=None, criterion=criterion,
    )


class InstanceNormVGG(nn.Module):
    """UNIT's domain-invariant perceptual distance: MSE between instance-normalised
    VGG16 relu5_3 features of an image and its translation."""

    def __init__(self, weights: str | None):
        super().__init__()
        self.features = VGGFeatures("vgg16", layers=("relu5_3",), weights=weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        (fx,), (fy,) = self.features(x), self.features(y)
        return F.mse_loss(F.instance_norm(fx), F.instance_norm(fy.detach()))


class UNITLoss:
    """The UNIT objective as named terms; the task calls :meth:`d_terms` then :meth:`g_terms`.

    Each term is summed over both domains and reported unweighted; ``loss`` is
    the weighted total that is back-propagated. Weights (``LOSS_WEIGHTS``): gan 1,
    recon_x 10, recon_kl 0.01, cyc_x 10, cyc_kl 0.01, vgg 0 (off), sem 0 (off).

    ``noise`` is the standard deviation of the reduced VAE's code noise (1 in
    UNIT; 0 makes it a plain auto-encoder). With a ``segmenter``, the ``sem``
    term asks that the translation of a synthetic image still segments into the
    synthetic labels (semantic consistency); the segmenter itself trains in
    phase ``S`` on the synthetic images and on their (detached) translations.
    """

    def __init__(self, G: UNITGenerator, D: nn.ModuleDict, weights: dict[str, float], *, gan_mode: str = "lsgan",
                 vgg: nn.Module | None = None, noise: float = 1.0, segmenter: nn.Module | None = None):
        self.G, self.D, self.w, self.gan_mode, self.vgg = G, D, dict(weights), gan_mode, vgg
        self.noise, self.segmenter = float(noise), segmenter

    def _sample(self, h: torch.Tensor) -> torch.Tensor:
        if self.noise == 0:
            return h
        return h + self.noise * torch.randn_like(h)  # reduced VAE: fixed variance, learned mean

    def s_terms(self, x_a: torch.Tensor, y_a: torch.Tensor) -> dict[str, torch.Tensor]:
        """The auxiliary segmenter learns the synthetic labels on the synthetic images and their translations."""
        with torch.no_grad():
            x_ab = self.G.decode(self._sample(self.G.encode(x_a, "a")), "b", x_a)
        ce_a = cross_entropy(self.segmenter(x_a), y_a, ignore_index=IGNORE_INDEX)
        ce_ab = cross_entropy(self.segmenter(x_ab), y_a, ignore_index=IGNORE_INDEX)
        return {"loss": ce_a + ce_ab, "ce_a": ce_a, "ce_ab": ce_ab}

    def d_terms(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        G, D = self.G, self.D
        with torch.no_grad():
            h_a, h_b = G.encode(x_a, "a"), G.encode(x_b, "b")
            x_ba, x_ab = G.decode(self._sample(h_b), "a", x_b), G.decode(self._sample(h_a), "b", x_a)
        adv_a = gan.d_loss(self.gan_mode, D["a"](x_a), D["a"](x_ba))
        adv_b = gan.d_loss(self.gan_mode, D["b"](x_b), D["b"](x_ab))
        gan_total = adv_a + adv_b
        return {"loss": self.w["gan"] * gan_total, "gan": gan_total, "gan_a": adv_a, "gan_b": adv_b}

    def g_terms(self, x_a: torch.Tensor, x_b: torch.Tensor, y_a: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        G, D, w = self.G, self.D, self.w
        h_a, h_b = G.encode(x_a, "a"), G.encode(x_b, "b")
        z_a, z_b = self._sample(h_a), self._sample(h_b)
        x_aa, x_bb = G.decode(z_a, "a", x_a), G.decode(z_b, "b", x_b)    # within-domain reconstruction
        x_ba, x_ab = G.decode(z_b, "a", x_b), G.decode(z_a, "b", x_a)    # translation
        h_ba, h_ab = G.encode(x_ba, "a"), G.encode(x_ab, "b")            # re-encode the translations
        x_aba, x_bab = G.decode(self._sample(h_ab), "a", x_ab), G.decode(self._sample(h_ba), "b", x_ba)  # cycle

        terms = {
            "recon_x": F.l1_loss(x_aa, x_a) + F.l1_loss(x_bb, x_b),
            "recon_kl": h_a.pow(2).mean() + h_b.pow(2).mean(),
            "cyc_x": F.l1_loss(x_aba, x_a) + F.l1_loss(x_bab, x_b),
            "cyc_kl": h_ab.pow(2).mean() + h_ba.pow(2).mean(),
            "gan": gan.g_loss(self.gan_mode, D["a"](x_ba)) + gan.g_loss(self.gan_mode, D["b"](x_ab)),
        }
        if self.vgg is not None:
            terms["vgg"] = self.vgg(x_ba, x_b) + self.vgg(x_ab, x_a)
        if self.segmenter is not None and y_a is not None:
            terms["sem"] = cross_entropy(self.segmenter(x_ab), y_a, ignore_index=IGNORE_INDEX)
        terms["loss"] = sum(w[name] * value for name, value in terms.items())
        return terms


@dataclass
class UNITTask(TrainTask):
    """D then G each step; ``samples()`` draws input | translated | cycle reconstruction."""

    criterion: UNITLoss | None = None

    def loss(self, phase: str, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        if phase == "D":
            return self.criterion.d_terms(batch["a"], batch["b"])
        if phase == "S":
            return self.criterion.s_terms(batch["a"], batch["a_label"])
        return self.criterion.g_terms(batch["a"], batch["b"], batch.get("a_label"))

    @torch.no_grad()
    def samples(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> torch.Tensor:
        """Rows: synthetic | synthetic->real | back to synthetic, then real | real->synthetic | back to real."""
        G = G or self.nets["G"]
        was_training = G.training
        G.eval()
        rows = []
        for src, dst in (("a", "b"), ("b", "a")):
            x = batch[src]
            y = G.decode(G.encode(x, src), dst, x)
            back = G.decode(G.encode(y, dst), src, y)
            for i in range(x.shape[0]):
                rows += [x[i], y[i], back[i]]
        G.train(was_training)
        grid = make_grid(torch.stack(rows).float().cpu(), nrow=3, padding=2, value_range=(-1, 1), normalize=True)
        return grid.clamp(0, 1)


@dataclass
class UNITConfig:
    """UNIT's network settings (constructor arguments of :class:`UNIT`); defaults: the paper's."""

    channels: int = 64      # encoder width after the first conv
    n_down: int = 2         # stride-2 convs in the encoder (output stride 2**n_down)
    n_res: int = 4          # residual blocks in encoder and decoder
    n_shared: int = 1       # of which shared between the domains
    share: bool = True      # share them at all (the shared latent space)
    d_channels: int = 64    # discriminator width
    d_layers: int = 4       # discriminator depth
    d_scales: int = 3       # multi-scale discriminator scales
    skip: bool = False      # residual decoders: tanh(f(z) + atanh(source)), the identity at the start


@dataclass
class UNITTrain(TrainConfig):
    """UNIT's training options: the engine's plus the schedule, GAN loss and VGG term."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 1e-4
    lr_step: int = 100000       # halve the learning rate every lr_step steps
    lr_gamma: float = 0.5
    gan_mode: str = "lsgan"
    vgg_weights: str | None = None  # for the optional perceptual term: a path, "random", or None (cache/download)
    vae_noise: float = 1.0          # std of the reduced VAE's code noise (0: a deterministic auto-encoder)
    sem_segmenter: str = "fastseg"  # the auxiliary segmenter of the sem term (tiny preset), trained alongside
    sem_lr: float = 1e-3
    loss: dict[str, float] = field(default_factory=lambda: dict(LOSS_WEIGHTS))


TINY_NET = UNITConfig(channels=16, n_res=2, d_channels=16, d_layers=3)  # the tiny and cpu presets' networks

PRESETS = {
    "tiny": Preset(
        TINY_NET,
        UNITTrain(size=[64, 128], steps=300, lr=2e-4, checkpoint_every=100, sample_every=50),
    ),
    # The CPU recipe (docs/fidelity.md): the tiny networks plus the semantic-consistency term at weight 3,
    # 2000 steps at 64x128, about 9 minutes on 2 CPU cores. Chosen on the street demo world only; checked
    # on dusk.
    "cpu": Preset(
        TINY_NET,
        UNITTrain(size=[64, 128], steps=2000, lr=2e-4, checkpoint_every=500, sample_every=250,
                  loss={**LOSS_WEIGHTS, "sem": 3.0}),
    ),
    "paper": Preset(
        UNITConfig(),
        UNITTrain(size=[256, 512], steps=200000, checkpoint_every=5000, sample_every=1000, log_every=100),
    ),
}


@register_model("unit", kind="translation", input_kind="image", presets=PRESETS, config=UNITConfig,
                task=make_unit_task)
def unit(**kwargs) -> UNIT:
    """UNIT VAE-GAN with a shared latent space (Liu et al. 2017; the base of UNIT + smart batch)."""
    return UNIT(**kwargs)
