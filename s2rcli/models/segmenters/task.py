"""The segmenters' training task (cross-entropy, poly schedule), their presets and registrations.

The networks are in ``network.py`` beside this file; the data source is
:class:`s2rcli.data.seg_source.SegmentationData`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...console import warn
from ...data.seg_source import SegmentationData
from ...device import DistInfo
from ...errors import S2RError
from ...losses.segmentation import IGNORE_INDEX, cross_entropy
from ..config import Preset, TrainConfig
from ..contract import Phase, TrainTask
from ..registry import register_model
from .network import FastSeg, Segmenter, TorchvisionSegmenter


class SegmentationTask(TrainTask):
    """One phase, ``S``: cross-entropy with 255 ignored; pixel accuracy is logged too."""

    def loss(self, phase: str, batch: Any, step: int) -> dict[str, torch.Tensor]:
        net = self.nets["S"]
        logits = net(batch["image"])
        label = batch["label"]
        ce = cross_entropy(logits, label, ignore_index=IGNORE_INDEX)
        with torch.no_grad():
            valid = label != IGNORE_INDEX
            acc = ((logits.argmax(1) == label) & valid).sum() / valid.sum().clamp(min=1)
        return {"loss": ce, "ce": ce, "acc": acc}


def _optimizer(model: Segmenter, train: Mapping[str, Any]) -> torch.optim.Optimizer:
    backbone = {id(p) for p in model.backbone_parameters()}
    head = [p for p in model.parameters() if id(p) not in backbone]
    lr = float(train["lr"])
    groups = [{"params": head, "lr": lr}]
    if backbone:
        groups.append({"params": model.backbone_parameters(), "lr": lr * float(train.get("backbone_lr_mult", 1.0))})
    kind = str(train.get("optimizer", "adam")).lower()
    wd = float(train.get("weight_decay", 0.0))
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(train.get("betas", (0.9, 0.999))), weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(train.get("betas", (0.9, 0.999))), weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(train.get("momentum", 0.9)), weight_decay=wd)
    raise S2RError(f"unknown optimizer {kind!r}", hint="use adam, adamw or sgd")


def make_segmentation_task(
    model: Segmenter, cfg: dict[str, Any], data: Mapping[str, Any], dist: DistInfo, device: torch.device
) -> TrainTask:
    """The supervised task for any registered segmenter.

    ``data["train"]`` is one dataset or a list of them (their union is used);
    ``cfg["train"]`` supplies batch size, optimiser and augmentation settings,
    and ``cfg["data"]["size"]`` the training resolution.
    """
    train = cfg["train"]
    if isinstance(model, TorchvisionSegmenter) and model.arch == "deeplabv3" and int(train["batch_size"]) < 2:
        raise S2RError("deeplabv3 needs a batch size of at least 2 (its pooled branch uses BatchNorm)",
                       hint="pass --batch-size 2 or more, or use fcn / fastseg")
    datasets = data["train"] if isinstance(data["train"], (list, tuple)) else [data["train"]]
    size = (cfg.get("data") or {}).get("size") or train.get("size")
    choice = train.get("backbone_weights")
    if model.backbone_parameters():
        model.load_backbone_weights(choice)
    elif choice not in (None, "random"):
        warn(f"{cfg.get('model')} has no pretrained backbone; --backbone-weights is ignored")
    source = SegmentationData(
        datasets,
        size=size,
        batch_size=int(train["batch_size"]),
        seed=int(cfg.get("seed", 0)),
        flip=bool(train.get("flip", True)),
        crop_scale=train.get("crop_scale") or (1.0, 1.0),
        workers=int(train.get("workers", 0)),
        cache_mb=float(train.get("cache_mb", 1024)),
        rank=dist.rank,
        world_size=dist.world_size,
    )
    optimizer = _optimizer(model, train)
    steps = max(1, int(train["steps"]))
    schedulers = {}
    if str(train.get("lr_schedule", "poly")) == "poly":
        power = float(train.get("poly_power", 0.9))
        schedulers["S"] = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: max(0.0, 1.0 - min(s, steps) / steps) ** power
        )
    return SegmentationTask(
        model_name=str(cfg["model"]),
        model_kwargs=dict(cfg["model_kwargs"]),
        model=model,
        nets={"S": model},
        phases=[Phase("S", "S", ("S",))],
        optimizers={"S": optimizer},
        schedulers=schedulers,
        data=source,
        label_space=cfg.get("label_space"),
        monitor="S/ce",
    )


# --- presets and registration ------------------------------------------------

@dataclass
class FastSegConfig:
    """fastseg's network settings (constructor arguments of :class:`FastSeg`); defaults: ERFNet's."""

    num_classes: int = 19
    widths: list[int] = field(default_factory=lambda: [16, 64, 128])    # channels after the three downsamplers
    encoder_blocks: list[int] = field(default_factory=lambda: [5, 8])    # blocks at 1/4 and (dilated) at 1/8
    decoder_blocks: list[int] = field(default_factory=lambda: [2, 2])
    dropout: list[float] = field(default_factory=lambda: [0.03, 0.3])


@dataclass
class TorchvisionConfig:
    """Settings of the torchvision segmenters."""

    num_classes: int = 19


@dataclass
class SegTrain(TrainConfig):
    """Segmenter training: the engine's options plus optimiser, poly schedule, augmentation and backbone."""

    optimizer: str = "adam"            # adam, adamw or sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9              # sgd
    lr_schedule: str = "poly"          # poly (power poly_power down to 0 at the last step) or constant
    poly_power: float = 0.9
    flip: bool = True
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])  # random crop side, as a share, resized back
    cache_mb: float = 1024             # keep decoded training items in memory up to this size
    backbone_weights: str | None = None  # deeplabv3/fcn: ImageNet ResNet-50 weights (path, "random", None: cache)
    backbone_lr_mult: float = 1.0


@register_model(
    "fastseg",
    kind="segmenter",
    input_kind="image",
    task=make_segmentation_task,
    config=FastSegConfig,
    presets={
        "tiny": Preset(FastSegConfig(widths=[8, 32, 64], encoder_blocks=[2, 4], decoder_blocks=[1, 1], dropout=[0.0, 0.0]),
                       SegTrain(steps=600, batch_size=8, size=[64, 128], lr=5e-3, weight_decay=1e-4)),
        "paper": Preset(FastSegConfig(),
                        SegTrain(steps=60000, batch_size=6, size=[256, 512], lr=5e-4, weight_decay=1e-4)),
    },
    description="ERFNet-like segmenter that trains from scratch on a CPU",
)
def fastseg(**kwargs: Any) -> FastSeg:
    """ERFNet-like segmenter that trains from scratch on a CPU."""
    return FastSeg(**kwargs)


TORCHVISION_PRESETS = {
    "tiny": Preset(TorchvisionConfig(), SegTrain(steps=50, batch_size=2, size=[64, 128], optimizer="sgd", lr=1e-2,
                                                 weight_decay=1e-4)),
    "paper": Preset(TorchvisionConfig(), SegTrain(steps=40000, batch_size=8, size=[256, 512], optimizer="sgd",
                                                  lr=1e-2, weight_decay=1e-4)),
}


@register_model("deeplabv3", kind="segmenter", input_kind="image", presets=TORCHVISION_PRESETS,
                config=TorchvisionConfig, task=make_segmentation_task,
                description="torchvision DeepLabV3, ResNet-50 backbone (optional ImageNet weights)")
def deeplabv3(num_classes: int) -> TorchvisionSegmenter:
    """torchvision DeepLabV3 with a ResNet-50 backbone."""
    return TorchvisionSegmenter("deeplabv3", num_classes=num_classes)


@register_model("fcn", kind="segmenter", input_kind="image", presets=TORCHVISION_PRESETS,
                config=TorchvisionConfig, task=make_segmentation_task,
                description="torchvision FCN, ResNet-50 backbone (optional ImageNet weights)")
def fcn(num_classes: int) -> TorchvisionSegmenter:
    """torchvision FCN with a ResNet-50 backbone."""
    return TorchvisionSegmenter("fcn", num_classes=num_classes)
