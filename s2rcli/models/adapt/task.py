"""SAIT's second stage, segmentation adaptation (``adapt``): task, presets and registration.

``s2r train adapt --source TRANSLATED --real REAL --segmenter CKPT`` fine-tunes
the segmenter in ``CKPT`` with the paper's Eq. 7:

* ``seg``: cross-entropy on translated synthetic images with their synthetic
  labels (the ``source`` role; ``s2r translate`` output carries the labels);
* ``ssl``: cross-entropy on real images against offline pseudo-labels
  (confidence >= ``train.threshold``, 0.9), made by the starting segmenter
  before step 0 and written to ``train.pseudo_labels`` (``s2r train`` uses
  ``RUN/pseudo_labels``) with a per-class report;
* ``adv``: output-space adversarial alignment (Tsai et al. 2018): a PatchGAN
  ``D`` on the softmax maps learns to tell source predictions from real ones,
  and the segmenter learns to make its real predictions look like source ones.

Weights: seg 1, ssl 1, adv 1e-3 (1e-4 when the segmenter is ``fcn``, the
paper's FCN setting); ``train.loss.adv=null`` picks by segmenter. The
checkpoint is a segmenter checkpoint (``state_dicts["S"]``), so segment-eval,
SP-Feat and ``s2r train sait --segmenter`` load it like any segmenter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from ...console import info, warn
from ...data.labels import get_label_space
from ...data.seg_source import SegmentationData
from ...data.source import DataSource
from ...device import DistInfo
from ...errors import S2RError
from ...losses import gan
from ...losses.segmentation import cross_entropy
from ..blocks import PatchDiscriminator, init_weights
from ..config import Preset
from ..contract import Phase, TrainTask
from ..registry import get_model_entry, register_model
from ..segmenters.task import SegTrain
from ..segmenters.task import _optimizer as segmenter_optimizer  # the segmenters' own parameter groups
from .network import NAME, AdaptedSegmenter, load_base_segmenter
from .pseudo_labels import PseudoLabelled, print_kept_table, write_pseudo_labels

LOSS_WEIGHTS: dict[str, float | None] = {"seg": 1.0, "ssl": 1.0, "adv": None}
ADV_WEIGHT = 1e-3                  # the paper's DeepLabV2 setting
ADV_WEIGHT_BY_SEGMENTER = {"fcn": 1e-4}  # FCN-like networks (the paper's FCN8s setting)


def poly_schedule(optimizer: torch.optim.Optimizer, steps: int, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr * (1 - step / steps) ** power``, reaching 0 at ``steps``."""
    steps = max(1, int(steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - min(s, steps) / steps) ** power)


def resolve_loss_weights(loss: Mapping[str, Any], segmenter: str) -> dict[str, float]:
    weights = {**LOSS_WEIGHTS, **dict(loss)}
    unknown = sorted(set(weights) - set(LOSS_WEIGHTS))
    if unknown:
        raise S2RError(f"unknown adapt loss terms {unknown}", hint="valid: " + ", ".join(LOSS_WEIGHTS))
    if weights["adv"] is None:
        weights["adv"] = ADV_WEIGHT_BY_SEGMENTER.get(segmenter, ADV_WEIGHT)
    return {k: float(v) for k, v in weights.items()}


class AdaptData(DataSource):
    """Batches of labelled source images and pseudo-labelled real images, drawn in lockstep:
    ``{"source", "source_label", "real", "real_label"}``. Each side is a
    :class:`~s2rcli.data.seg_source.SegmentationData`, deterministic by draw index."""

    def __init__(self, source: SegmentationData, real: SegmentationData):
        self.source, self.real = source, real

    def __iter__(self):
        for s, r in zip(self.source, self.real):
            yield {"source": s["image"], "source_label": s["label"], "real": r["image"], "real_label": r["label"]}

    def __len__(self) -> int:
        return len(self.source)

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "real": self.real.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.source.load_state_dict(state["source"])
            self.real.load_state_dict(state["real"])


@dataclass
class AdaptTask(TrainTask):
    """Phase ``S`` (seg + ssl + adv), then phase ``D`` (the output-space discriminator)."""

    weights: dict[str, float] = field(default_factory=dict)
    _pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def loss(self, phase: str, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        S, D, w = self.nets["S"], self.nets["D"], self.weights
        if phase == "D":
            p_source, p_real = self._pending.pop(id(batch), None) or self._predictions(batch)
            d = gan.d_loss("nonsaturating", D(p_source), D(p_real))  # source maps are "real" to D
            return {"loss": d, "d": d}
        source_logits, real_logits = S(batch["source"]), S(batch["real"])
        terms = {"seg": cross_entropy(source_logits, batch["source_label"]),
                 "ssl": cross_entropy(real_logits, batch["real_label"])}
        p_real = F.softmax(real_logits, dim=1)
        if w["adv"] > 0:
            terms["adv"] = gan.g_loss("nonsaturating", D(p_real))
            self._pending[id(batch)] = (F.softmax(source_logits.detach(), dim=1), p_real.detach())
        with torch.no_grad():
            valid = batch["real_label"] != 255
            terms["ssl_pixels"] = valid.float().mean()  # the share of real pixels with a pseudo-label
        terms["loss"] = sum(w[k] * terms[k] for k in ("seg", "ssl", "adv") if k in terms)
        return terms

    @torch.no_grad()
    def _predictions(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        S = self.nets["S"]
        return F.softmax(S(batch["source"]), dim=1), F.softmax(S(batch["real"]), dim=1)


def make_adapt_task(model: AdaptedSegmenter, cfg: dict[str, Any], data: Mapping[str, Any], dist: DistInfo,
                    device: torch.device) -> AdaptTask:
    """The adaptation task: starts from ``train.segmenter``, writes the pseudo-labels, wires S and D."""
    train = cfg["train"]
    space = get_label_space(cfg.get("label_space") or "cityscapes19")
    kwargs = dict(cfg["model_kwargs"])
    start = train.get("segmenter")
    if start:
        net, name, seg_kwargs, ckpt = load_base_segmenter(start)
        if int(net.num_classes) != space.num_classes:
            raise S2RError(f"--segmenter {start} predicts {net.num_classes} classes, but the run's label space "
                           f"{space.name} has {space.num_classes}", hint=f"pass --set label_space={ckpt.get('label_space')}")
        model.attach(net, name, seg_kwargs)
        kwargs.update(segmenter=model.segmenter, segmenter_kwargs=model.segmenter_kwargs)
        identity = {"segmenter": str(start), "segmenter_step": int(ckpt.get("step", 0))}
    else:
        warn("adapt: no --segmenter; adapting the randomly initialised network (its pseudo-labels mean nothing)")
        identity = {"segmenter": None, "segmenter_step": 0}
    model.train()
    weights = resolve_loss_weights(train.get("loss", {}), model.segmenter)

    size = (cfg.get("data") or {}).get("size")
    folder = train.get("pseudo_labels")
    if not folder:
        raise S2RError("adapt needs a folder for its pseudo-labels (train.pseudo_labels)",
                       hint="`s2r train adapt` uses RUN/pseudo_labels; from Python pass "
                            "options={'train.pseudo_labels': DIR}")
    real = data["real"]
    model.to(device)
    report = write_pseudo_labels(model.S, real, folder, threshold=float(train["threshold"]), size=size,
                                 class_names=space.class_names,
                                 identity={**identity, "real": getattr(real, "spec", None)}, device=device)
    if dist.is_main:
        info(f"pseudo-labels: {report['kept_pixels']} of {report['pixels']} real pixels kept at confidence >= "
             f"{train['threshold']} ({folder}/report.json)")
        print_kept_table(report, f"pseudo-labels of {len(real)} real images: share of each class's pixels kept")

    sources = data["source"] if isinstance(data["source"], (list, tuple)) else [data["source"]]
    common = dict(size=size, batch_size=int(train["batch_size"]), flip=bool(train.get("flip", True)),
                  crop_scale=train.get("crop_scale") or (1.0, 1.0), workers=int(train.get("workers", 0)),
                  cache_mb=float(train.get("cache_mb", 1024)), rank=dist.rank, world_size=dist.world_size)
    seed = int(cfg.get("seed", 0))
    source = AdaptData(SegmentationData(sources, seed=seed, **common),
                       SegmentationData([PseudoLabelled(real, folder)], seed=seed + 1, **common))

    D = init_weights(PatchDiscriminator(model.num_classes, int(train["d_channels"]), int(train["d_layers"])),
                     "gaussian")
    steps, power = int(train["steps"]), float(train.get("poly_power", 0.9))
    optimizers = {"S": segmenter_optimizer(model, train),
                  "D": torch.optim.Adam(D.parameters(), lr=float(train["d_lr"]), betas=tuple(train["d_betas"]))}
    phases = [Phase("S", "S", ("S",))]
    if weights["adv"] > 0:
        phases.append(Phase("D", "D", ("D",)))
    poly = str(train.get("lr_schedule", "poly")) == "poly"
    schedulers = {p.optimizer: poly_schedule(optimizers[p.optimizer], steps, power) for p in phases} if poly else {}
    return AdaptTask(
        model_name=str(cfg["model"]), model_kwargs=kwargs, model=model, nets={"S": model.S, "D": D},
        phases=phases, optimizers=optimizers, schedulers=schedulers, data=source,
        label_space=cfg.get("label_space"), monitor="S/seg", weights=weights,
    )


# --- presets and registration ------------------------------------------------

def tiny_fastseg_kwargs() -> dict[str, Any]:
    """The settings of fastseg's tiny preset (the tiny presets' default segmenter)."""
    return dataclasses.asdict(get_model_entry("fastseg").presets["tiny"].model)


@dataclass
class AdaptConfig:
    """The adapted network (constructor arguments of :class:`AdaptedSegmenter`). ``train.segmenter``
    replaces ``segmenter`` and ``segmenter_kwargs`` with those of the checkpoint it starts from."""

    num_classes: int = 19
    segmenter: str = "fastseg"                                      # a registered segmenter
    segmenter_kwargs: dict[str, Any] = field(default_factory=dict)  # its settings (empty: its defaults)


@dataclass
class AdaptTrain(SegTrain):
    """Adaptation: the segmenters' training options, plus the start, the pseudo-labels and D."""

    segmenter: str | None = None       # the segmenter checkpoint to adapt (and to make the pseudo-labels)
    pseudo_labels: str | None = None   # folder for the pseudo-label PNGs and report.json (s2r train: RUN/pseudo_labels)
    threshold: float = 0.9             # confidence a pseudo-label needs (Eq. 9)
    d_lr: float = 1e-4                 # output-space discriminator: Adam, as in AdaptSegNet/BDL
    d_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    d_channels: int = 64
    d_layers: int = 4
    loss: dict[str, float | None] = field(default_factory=lambda: dict(LOSS_WEIGHTS))


PRESETS = {
    "tiny": Preset(AdaptConfig(segmenter_kwargs=tiny_fastseg_kwargs()),
                   AdaptTrain(steps=300, batch_size=8, size=[64, 128], lr=1e-3, weight_decay=1e-4, d_channels=16,
                              d_layers=3, checkpoint_every=100)),
    "paper": Preset(AdaptConfig(),
                    AdaptTrain(steps=120000, batch_size=1, size=[512, 1024], optimizer="sgd", lr=2.5e-4,
                               momentum=0.9, weight_decay=5e-4, crop_scale=[1.0, 1.0], checkpoint_every=5000,
                               log_every=100)),
}


@register_model(NAME, kind="segmenter", input_kind="image", presets=PRESETS, config=AdaptConfig,
                task=make_adapt_task, data=("source", "real"), labelled=("source",),
                description="SAIT's adaptation stage: a segmenter fine-tuned on translated + pseudo-labelled real images")
def adapt(**kwargs: Any) -> AdaptedSegmenter:
    """SAIT's adaptation stage: a segmenter fine-tuned on translated + pseudo-labelled real images."""
    return AdaptedSegmenter(**kwargs)
