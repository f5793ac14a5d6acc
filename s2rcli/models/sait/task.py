"""SAIT's training task: the loss terms, the D/G phases, the presets and the registration.

The networks are in ``network.py`` beside this file. ``s2r train sait --synthetic
SPEC --real SPEC --segmenter CKPT``: the segmenter in ``CKPT`` becomes the frozen
``M`` and is copied into every checkpoint (``state_dicts["M"]``, its registry
name and settings in ``model_kwargs``), so ``s2r translate --checkpoint RUN``
needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torchvision.utils import make_grid

from ...console import warn
from ...data.labels import colorize, get_label_space
from ...data.pair_source import make_pair_source
from ...errors import S2RError
from ...losses import gan
from ...losses.segmentation import soft_cross_entropy, symmetric_cross_entropy
from ..adapt.network import load_base_segmenter
from ..adapt.task import poly_schedule, tiny_fastseg_kwargs
from ..config import Preset, TrainConfig
from ..contract import Phase, TrainTask
from ..registry import register_model
from ..unit.network import DIRECTIONS
from .network import SAIT, SAITGenerator

# Eq. 1: recon 10, GAN 1, image cycle 10, latent cycle 1, SCE 10.
LOSS_WEIGHTS = {"recon_x": 10.0, "gan": 1.0, "cyc_x": 10.0, "cyc_z": 1.0, "sce": 10.0}


def semantic_consistency(logits_x: torch.Tensor, logits_fx: torch.Tensor) -> torch.Tensor:
    """The ``sce`` term: symmetric cross-entropy between ``M(x)`` and ``M(F(x))`` (Eq. 5) less the
    two predictions' entropies, i.e. the symmetric KL divergence.

    It is 0 exactly when the two predictions agree and positive otherwise; Eq. 5 as
    printed equals this plus ``H(M(x)) + H(M(F(x)))``, which is not 0 for agreeing soft
    predictions and also rewards a more confident ``M(F(x))``.
    """
    return (symmetric_cross_entropy(logits_x, logits_fx)
            - soft_cross_entropy(logits_x, logits_x) - soft_cross_entropy(logits_fx, logits_fx))


@dataclass
class SAITTask(TrainTask):
    """G then D each step (D learns from the translations the G phase made, so the generator runs
    once a step); ``samples()`` shows what ``M`` sees before and after translation."""

    criterion: SAITLoss | None = None

    def loss(self, phase: str, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        # A phase calls G and D several times: compute each spectrally normalised weight once
        # (one power iteration per phase, not one per call).
        with parametrize.cached():
            return self.criterion.d_terms(batch) if phase == "D" else self.criterion.g_terms(batch)

    @torch.no_grad()
    def samples(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> torch.Tensor:
        """Rows per image, synthetic then real: input | M(input) | translated | M(translated) | back."""
        G, M = G or self.nets["G"], self.nets["M"]
        space = get_label_space(self.label_space or "cityscapes19")
        show_m = int(M.num_classes) == space.num_classes  # colour M's classes when they are the run's

        def seg(logits: torch.Tensor) -> list[torch.Tensor]:
            if not show_m:
                return []
            colours = colorize(logits.argmax(1).cpu().numpy().astype(np.uint8), space)
            return [torch.from_numpy(colours).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(logits.device)]

        def translate(x: torch.Tensor, src: str, dst: str) -> tuple[torch.Tensor, torch.Tensor]:
            m = M(x)
            return G.decode(G.encode(x, src), dst, m), m

        mode, columns = G.training, []
        G.eval()
        for src, dst in DIRECTIONS.values():
            x = batch[src]
            y, m_x = translate(x, src, dst)
            back, m_y = translate(y, dst, src)
            columns.append(torch.stack([x, *seg(m_x), y, *seg(m_y), back], dim=1))  # B x columns x 3 x H x W
        G.train(mode)
        cells = torch.cat(columns).flatten(0, 1)
        grid = make_grid(cells.float().cpu(), nrow=5 if show_m else 3, padding=2, value_range=(-1, 1), normalize=True)
        return grid.clamp(0, 1)


class SAITLoss:
    """The SAIT objective (Eq. 1) as named terms; the task calls :meth:`g_terms` then :meth:`d_terms`.

    Each term is summed over both domains and reported unweighted; ``loss`` is the
    weighted total. A term whose weight is 0 is not computed (``sce=0``: ``M`` runs
    only for the SPADE condition; with ``spade=False`` as well, not at all).
    """

    def __init__(self, G: SAITGenerator, D: nn.ModuleDict, M: nn.Module, weights: dict[str, float], *,
                 gan_mode: str = "lsgan"):
        self.G, self.D, self.M, self.w, self.gan_mode = G, D, M, dict(weights), gan_mode
        self.uses_sce = self.w["sce"] > 0
        self.needs_m = self.G.spade or self.uses_sce

    def conditions(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``M(x_a)``, ``M(x_b)``: computed once per batch and kept in it (``M`` is frozen, so both
        phases see the same values)."""
        if "m_a" not in batch:
            with torch.no_grad():
                batch["m_a"], batch["m_b"] = self.segment(batch["a"], batch["b"])
        return batch["m_a"], batch["m_b"]

    def segment(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``M(x_a), M(x_b)`` in one forward pass (M is in eval mode: the batch does not change its output)."""
        if not self.needs_m:
            return None, None
        m_a, m_b = self.M(torch.cat([x_a, x_b])).split([x_a.shape[0], x_b.shape[0]])
        return m_a, m_b

    def translations(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminators' fakes ``x_ab``, ``x_ba``: those the G phase of this step made (no second
        generator pass), else made here."""
        if "fake_ab" not in batch:
            G = self.G
            m_a, m_b = self.conditions(batch)
            with torch.no_grad():
                batch["fake_ab"] = G.decode(G.encode(batch["a"], "a"), "b", m_a)
                batch["fake_ba"] = G.decode(G.encode(batch["b"], "b"), "a", m_b)
        return batch["fake_ab"], batch["fake_ba"]

    def d_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        D = self.D
        x_a, x_b = batch["a"], batch["b"]
        x_ab, x_ba = self.translations(batch)
        adv_a = gan.d_loss(self.gan_mode, D["a"](x_a), D["a"](x_ba))
        adv_b = gan.d_loss(self.gan_mode, D["b"](x_b), D["b"](x_ab))
        gan_total = adv_a + adv_b
        return {"loss": self.w["gan"] * gan_total, "gan": gan_total, "gan_a": adv_a, "gan_b": adv_b}

    def g_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        G, D, w = self.G, self.D, self.w
        x_a, x_b = batch["a"], batch["b"]
        m_a, m_b = self.conditions(batch)
        h_a, h_b = G.encode(x_a, "a"), G.encode(x_b, "b")
        x_aa, x_bb = G.decode(h_a, "a", m_a), G.decode(h_b, "b", m_b)      # within-domain reconstruction
        x_ab, x_ba = G.decode(h_a, "b", m_a), G.decode(h_b, "a", m_b)      # translation, guided by M(source)
        m_ab, m_ba = self.segment(x_ab, x_ba)   # M of the translations: the SCE targets and the cycle's condition
        h_ab, h_ba = G.encode(x_ab, "b"), G.encode(x_ba, "a")
        x_aba, x_bab = G.decode(h_ab, "a", m_ab), G.decode(h_ba, "b", m_ba)
        batch["fake_ab"], batch["fake_ba"] = x_ab.detach(), x_ba.detach()  # the D phase's fakes

        terms = {
            "recon_x": F.l1_loss(x_aa, x_a) + F.l1_loss(x_bb, x_b),
            "gan": gan.g_loss(self.gan_mode, D["a"](x_ba)) + gan.g_loss(self.gan_mode, D["b"](x_ab)),
            "cyc_x": F.l1_loss(x_aba, x_a) + F.l1_loss(x_bab, x_b),
            "cyc_z": F.l1_loss(h_ab, h_a) + F.l1_loss(h_ba, h_b),
        }
        if self.uses_sce:
            terms["sce"] = semantic_consistency(m_a, m_ab) + semantic_consistency(m_b, m_ba)
        terms["loss"] = sum(w[name] * value for name, value in terms.items())
        return terms


def make_sait_task(model: SAIT, cfg: dict[str, Any], data: dict[str, Any], dist, device) -> SAITTask:
    """Build the SAIT task from a resolved run config; ``train.segmenter`` becomes ``M``."""
    train = cfg["train"]
    weights = {**LOSS_WEIGHTS, **train.get("loss", {})}
    unknown = sorted(set(weights) - set(LOSS_WEIGHTS))
    if unknown:
        raise S2RError(f"unknown SAIT loss terms {unknown}", hint="valid: " + ", ".join(LOSS_WEIGHTS))
    kwargs = dict(cfg["model_kwargs"])
    if train.get("segmenter"):
        net, name, seg_kwargs, _ = load_base_segmenter(train["segmenter"])
        model.attach_segmenter(net, name, seg_kwargs)
        kwargs.update(segmenter=name, segmenter_kwargs=dict(seg_kwargs))
    else:
        warn("sait: no --segmenter; M keeps the weights it was built with (random, unless a checkpoint restores them)")
    criterion = SAITLoss(model.G, model.D, model.M, weights, gan_mode=train.get("gan_mode", "lsgan"))
    betas, wd = tuple(train["betas"]), float(train["weight_decay"])
    optimizers = {  # TTUR: the discriminators learn faster than the generator (train.d_lr > train.lr)
        "G": torch.optim.Adam(model.G.parameters(), lr=float(train["lr"]), betas=betas, weight_decay=wd),
        "D": torch.optim.Adam(model.D.parameters(), lr=float(train["d_lr"]), betas=betas, weight_decay=wd),
    }
    schedulers = {}
    if str(train.get("lr_schedule", "poly")) == "poly":
        schedulers = {k: poly_schedule(opt, int(train["steps"]), float(train["poly_power"]))
                      for k, opt in optimizers.items()}
    return SAITTask(
        model_name=cfg["model"], model_kwargs=kwargs, model=model,
        nets={"G": model.G, "D": model.D, "M": model.M},
        phases=[Phase("G", optimizer="G", nets=("G",)), Phase("D", optimizer="D", nets=("D",))],
        optimizers=optimizers, schedulers=schedulers, data=make_pair_source(cfg, data, dist), ema={"G_ema": "G"},
        label_space=cfg.get("label_space"), monitor=None, criterion=criterion,
    )


# --- presets and registration ------------------------------------------------

@dataclass
class SAITConfig:
    """SAIT's network settings (constructor arguments of :class:`SAIT`); defaults: the paper's.

    ``segmenter``/``segmenter_kwargs`` describe ``M``; ``train.segmenter`` replaces them
    with those of the checkpoint it loads.
    """

    channels: int = 64      # encoder width after the first conv
    n_down: int = 2         # stride-2 convs in the encoder (output stride 2**n_down)
    n_res: int = 4          # residual blocks in encoder and decoder
    n_shared: int = 1       # of which shared between the domains
    share: bool = True      # share them at all (the shared latent space)
    spade: bool = True      # decoder residual blocks: IN + SPADE on M's logits (False: IN only, the ablation)
    spade_hidden: int = 128  # width of SPADE's embedding of the logits
    spectral: bool = True   # spectral norm on the generator's convs (the discriminators always have it)
    d_channels: int = 64    # discriminator width
    d_layers: int = 4       # discriminator depth
    d_scales: int = 3       # multi-scale discriminator scales
    segmenter: str = "fastseg"                                      # M: a registered segmenter ...
    segmenter_kwargs: dict[str, Any] = field(default_factory=dict)  # ... and its settings (empty: its defaults)


@dataclass
class SAITTrain(TrainConfig):
    """SAIT's training options: the engine's plus TTUR, the poly schedule and the segmenter."""

    lr: float = 1e-4                 # generator
    d_lr: float = 4e-4               # discriminators (TTUR: 4x the generator's)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    lr_schedule: str = "poly"        # poly (to 0 at the last step) or constant
    poly_power: float = 0.9
    gan_mode: str = "lsgan"
    segmenter: str | None = None     # the segmenter checkpoint that becomes M (s2r train --segmenter)
    loss: dict[str, float] = field(default_factory=lambda: dict(LOSS_WEIGHTS))


PRESETS = {
    "tiny": Preset(
        SAITConfig(channels=16, n_res=2, spade_hidden=16, d_channels=16, d_layers=3, segmenter_kwargs=tiny_fastseg_kwargs()),
        SAITTrain(size=[64, 128], steps=300, lr=2e-4, d_lr=8e-4, checkpoint_every=100, sample_every=50),
    ),
    "paper": Preset(
        SAITConfig(),
        SAITTrain(size=[512, 512], steps=1000000, checkpoint_every=5000, sample_every=1000, log_every=100),
    ),
}


@register_model("sait", kind="translation", input_kind="image", presets=PRESETS, config=SAITConfig,
                task=make_sait_task)
def sait(**kwargs: Any) -> SAIT:
    """SAIT: UNIT with SPADE decoders guided by a frozen segmenter, plus semantic consistency (Musto & Zinelli)."""
    return SAIT(**kwargs)
