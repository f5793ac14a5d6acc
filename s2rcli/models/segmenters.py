"""Segmenters: a small ERFNet-like network that trains from scratch on a CPU
("fastseg"), and torchvision's DeepLabV3 and FCN with a ResNet-50 backbone.

They serve ``segment-eval`` (train on synthetic / translated / real sets, test
on real), SP-Feat for unlabelled real images, and later the SAIT adaptation
stage. All of them share the segmenter contract:

- ``forward(x)``: ``x`` is ``Bx3xHxW`` in ``[-1, 1]``; returns logits ``BxCxHxW``
  at the input size, for any ``H`` and ``W``;
- ``num_classes``; ``load_s2r_state_dicts``; ``make_task`` (one phase ``"S"``,
  cross-entropy with 255 ignored, on a data source deterministic by index).

The checkpoint stores the network under ``state_dicts["S"]``.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, DataLoader

from ..console import warn
from ..errors import S2RError
from ..losses.segmentation import IGNORE_INDEX, cross_entropy
from ..training.distributed import DistInfo
from ..training.task import DataSource, Phase, TrainTask
from .registry import register_model

# --- the shared base ------------------------------------------------------------


class Segmenter(nn.Module):
    """Base class: the checkpoint mapping, prediction, and the training task."""

    num_classes: int
    stride: int = 8

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        key = "S_ema" if prefer_ema and "S_ema" in state_dicts else "S"
        if key not in state_dicts:
            raise S2RError(
                "the checkpoint holds no segmenter weights (no 'S' state dict)",
                hint="pass a checkpoint written by `s2r segment-eval train-and-test`",
            )
        self.load_state_dict(state_dicts[key])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Class ids ``BxHxW`` (int64); logits are resized bilinearly to ``size`` first."""
        logits = self(x)
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.argmax(1)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters that start from pretrained weights (they may get a lower learning rate)."""
        return []

    def load_backbone_weights(self, choice: str | None) -> None:
        """Initialise the backbone from ImageNet weights (``choice``: a path, ``"random"``, or ``None``
        for the cache/download). Networks without a pretrained backbone ignore it."""

    def make_task(self, cfg: dict[str, Any], data: Mapping[str, Any], dist: DistInfo, device: torch.device) -> TrainTask:
        return make_segmentation_task(self, cfg, data, dist, device)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


# --- fastseg: ERFNet-like ---------------------------------------------------------


class _Downsampler(nn.Module):
    """Strided 3x3 conv concatenated with 2x2 max-pooling of the input (ERFNet's downsampler)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        if cout <= cin:
            raise ValueError("a downsampler must widen the features")
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), F.max_pool2d(x, 2)], 1)))


class _NonBottleneck1D(nn.Module):
    """Residual block of factorised (3x1 then 1x3) convolutions; the second pair dilated."""

    def __init__(self, ch: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        d = dilation
        self.c1 = nn.Conv2d(ch, ch, (3, 1), padding=(1, 0))
        self.c2 = nn.Conv2d(ch, ch, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(ch)
        self.c3 = nn.Conv2d(ch, ch, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.c4 = nn.Conv2d(ch, ch, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(ch)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c1(x))
        y = F.relu(self.bn1(self.c2(y)))
        y = F.relu(self.c3(y))
        y = self.drop(self.bn2(self.c4(y)))
        return F.relu(x + y)


class _Upsampler(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class FastSeg(Segmenter):
    """ERFNet-like encoder-decoder (output stride 8), reimplemented from Romera et al. 2018.

    Args:
        num_classes: output classes.
        widths: channels after the three downsamplers (ERFNet: 16, 64, 128).
        encoder_blocks: residual blocks at 1/4 (ERFNet: 5) and dilated blocks at 1/8
            (ERFNet: 8, dilations cycling 2, 4, 8, 16).
        decoder_blocks: residual blocks after each decoder upsampling (ERFNet: 2, 2).
        dropout: dropout in the 1/4 and 1/8 blocks (ERFNet: 0.03, 0.3).
    """

    def __init__(
        self,
        num_classes: int = 19,
        widths: Sequence[int] = (16, 64, 128),
        encoder_blocks: Sequence[int] = (5, 8),
        decoder_blocks: Sequence[int] = (2, 2),
        dropout: Sequence[float] = (0.03, 0.3),
    ):
        super().__init__()
        w1, w2, w3 = (int(w) for w in widths)
        self.num_classes = int(num_classes)
        self.stride = 8
        enc: list[nn.Module] = [_Downsampler(3, w1), _Downsampler(w1, w2)]
        enc += [_NonBottleneck1D(w2, 1, dropout[0]) for _ in range(int(encoder_blocks[0]))]
        enc.append(_Downsampler(w2, w3))
        dilations = (2, 4, 8, 16)
        enc += [_NonBottleneck1D(w3, dilations[i % 4], dropout[1]) for i in range(int(encoder_blocks[1]))]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [_Upsampler(w3, w2)]
        dec += [_NonBottleneck1D(w2) for _ in range(int(decoder_blocks[0]))]
        dec.append(_Upsampler(w2, w1))
        dec += [_NonBottleneck1D(w1) for _ in range(int(decoder_blocks[1]))]
        self.decoder = nn.Sequential(*dec)
        self.head = nn.ConvTranspose2d(w1, self.num_classes, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = _pad_to_multiple(x, self.stride)
        logits = self.head(self.decoder(self.encoder(x)))
        return logits[..., :h, :w]


# --- torchvision DeepLabV3 / FCN ---------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionSegmenter(Segmenter):
    """torchvision's DeepLabV3 or FCN (ResNet-50), built offline (no downloaded weights).

    Inputs in ``[-1, 1]`` are mapped to ImageNet normalisation inside, so an
    ImageNet backbone sees what it was trained on.
    """

    def __init__(self, arch: str, num_classes: int = 19):
        super().__init__()
        from torchvision.models import segmentation as tvseg

        builders = {"deeplabv3": tvseg.deeplabv3_resnet50, "fcn": tvseg.fcn_resnet50}
        if arch not in builders:
            raise ValueError(f"unknown torchvision segmenter {arch!r}")
        self.arch = arch
        self.num_classes = int(num_classes)
        self.stride = 8
        self.net = builders[arch](weights=None, weights_backbone=None, num_classes=self.num_classes, aux_loss=False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.net(x)["out"]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.net.backbone.parameters())

    def load_backbone_weights(self, choice: str | None) -> None:
        from ..pretrained import load_state_dict

        state = load_state_dict("resnet50", choice)
        if state is None:  # "random": keep the initialisation (pretrained.py has warned)
            return
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        result = self.net.backbone.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise S2RError(
                f"the ResNet-50 weights lack {len(result.missing_keys)} backbone tensors (e.g. {result.missing_keys[0]})",
                hint="pass torchvision's resnet50 ImageNet weights (resnet50-0676ba61.pth)",
            )


# --- registration ----------------------------------------------------------------

_TRAIN_COMMON = {
    "lr_schedule": "poly",
    "poly_power": 0.9,
    "momentum": 0.9,
    "betas": [0.9, 0.999],
    "flip": True,
    "crop_scale": [0.6, 1.0],
    "accumulate": 1,
    "amp": None,
    "workers": 0,
    "cache_mb": 1024,
    "log_every": 10,
    "checkpoint_every": 1000,
    "backbone_weights": None,
    "backbone_lr_mult": 1.0,
}


def _preset(model: dict[str, Any], **train: Any) -> dict[str, Any]:
    return {"model": model, "train": {**_TRAIN_COMMON, **train}}


@register_model(
    "fastseg",
    kind="segmenter",
    input_kind="image",
    presets={
        "tiny": _preset(
            {"num_classes": 19, "widths": [8, 32, 64], "encoder_blocks": [2, 4], "decoder_blocks": [1, 1], "dropout": [0.0, 0.0]},
            steps=600, batch_size=8, size=[64, 128], optimizer="adam", lr=5e-3, weight_decay=1e-4,
        ),
        "paper": _preset(
            {"num_classes": 19, "widths": [16, 64, 128], "encoder_blocks": [5, 8], "decoder_blocks": [2, 2],
             "dropout": [0.03, 0.3]},
            steps=60000, batch_size=6, size=[256, 512], optimizer="adam", lr=5e-4, weight_decay=1e-4,
        ),
    },
    description="ERFNet-like segmenter that trains from scratch on a CPU (paper 001's segmenter family)",
)
def fastseg(**kwargs: Any) -> FastSeg:
    """ERFNet-like segmenter that trains from scratch on a CPU."""
    return FastSeg(**kwargs)


def _torchvision_presets() -> dict[str, dict[str, Any]]:
    return {
        "tiny": _preset({"num_classes": 19}, steps=50, batch_size=2, size=[64, 128], optimizer="sgd", lr=1e-2,
                        weight_decay=1e-4),
        "paper": _preset({"num_classes": 19}, steps=40000, batch_size=8, size=[256, 512], optimizer="sgd", lr=1e-2,
                         weight_decay=1e-4, backbone_lr_mult=1.0),
    }


@register_model("deeplabv3", kind="segmenter", input_kind="image", presets=_torchvision_presets(),
                description="torchvision DeepLabV3, ResNet-50 backbone (optional ImageNet weights)")
def deeplabv3(num_classes: int = 19) -> TorchvisionSegmenter:
    """torchvision DeepLabV3 with a ResNet-50 backbone."""
    return TorchvisionSegmenter("deeplabv3", num_classes=num_classes)


@register_model("fcn", kind="segmenter", input_kind="image", presets=_torchvision_presets(),
                description="torchvision FCN, ResNet-50 backbone (optional ImageNet weights)")
def fcn(num_classes: int = 19) -> TorchvisionSegmenter:
    """torchvision FCN with a ResNet-50 backbone."""
    return TorchvisionSegmenter("fcn", num_classes=num_classes)


# --- training: data source and task ------------------------------------------------


class _CachedItems(torch.utils.data.Dataset):
    """Wraps a map-style dataset of dicts; keeps items in memory once read (within a budget)."""

    def __init__(self, base: torch.utils.data.Dataset, cache: bool):
        self.base, self.cache = base, cache
        self._items: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self._items.get(i)
        if item is None:
            raw = self.base[i]
            item = {"image": raw["image"], "label": raw["label"]}
            if self.cache:
                self._items[i] = item
        return item


class _AugmentedPositions(torch.utils.data.Dataset):
    """Item ``p`` is the sample at global draw position ``p``: a pure function of ``(seed, p)``.

    Order: one seeded permutation of the union per epoch (``p // N``); then a
    seeded horizontal flip and a random scale-crop resized back to the size.
    """

    def __init__(self, items: _CachedItems, seed: int, flip: bool, crop_scale: Sequence[float]):
        self.items, self.seed, self.flip = items, int(seed), bool(flip)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1])) if crop_scale else (1.0, 1.0)
        self._perm_epoch, self._perm = -1, np.arange(0)

    def index_for(self, p: int) -> int:
        n = len(self.items)
        epoch = p // n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 0x5E6, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[p % n])

    def __len__(self) -> int:
        return 2**62  # positions are unbounded; the batch sampler picks them

    def __getitem__(self, p: int) -> dict[str, torch.Tensor]:
        item = self.items[self.index_for(p)]
        image, label = item["image"], item["label"]
        rng = np.random.default_rng([self.seed, 0xA06, p])
        if self.flip and rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        lo, hi = self.crop_scale
        scale = rng.uniform(lo, hi) if hi > lo else lo
        if scale < 1.0:
            h, w = label.shape
            ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            image = image[:, y0:y0 + ch, x0:x0 + cw]
            label = label[y0:y0 + ch, x0:x0 + cw]
            image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            label = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        return {"image": image.contiguous(), "label": label.contiguous(), "position": p}


class _BatchPositions(torch.utils.data.Sampler):
    """Endless batches of positions: rank r takes batches k = r, r + W, r + 2W, ... from ``start``."""

    def __init__(self, batch_size: int, start: int, rank: int, world: int):
        self.batch_size, self.start, self.rank, self.world = batch_size, start, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            k = position * self.world + self.rank
            yield list(range(k * self.batch_size, (k + 1) * self.batch_size))
            position += 1


class SegmentationData(DataSource):
    """Labelled images from one or more datasets, as endless augmented batches.

    Deterministic by draw index: batch ``k`` depends only on ``(seed, k)``, so a
    resumed run sees the very batches an uninterrupted one would, with or
    without loader workers; ranks take disjoint batches.
    """

    def __init__(
        self,
        datasets: Sequence[Any],
        *,
        size: Sequence[int] | None,
        batch_size: int,
        seed: int = 0,
        flip: bool = True,
        crop_scale: Sequence[float] = (1.0, 1.0),
        workers: int = 0,
        cache_mb: float = 1024,
        rank: int = 0,
        world_size: int = 1,
    ):
        from ..data.torchdata import ImageLabelDataset

        if not datasets:
            raise S2RError("no training data given", hint="pass --train SPEC[,SPEC...]")
        for ds in datasets:
            if not getattr(ds, "has_labels", False):
                raise S2RError(
                    f"training set {getattr(ds, 'root', ds)} has no labels",
                    hint="a segmenter trains on images with label maps (e.g. `s2r translate` output carries them)",
                )
            if len(ds) == 0:
                raise S2RError(f"training set {getattr(ds, 'root', ds)} has no images")
        size_t = (int(size[0]), int(size[1])) if size else None
        union = ConcatDataset([ImageLabelDataset(ds, size=size_t, labels=True) for ds in datasets])
        n = len(union)
        per_item_mb = (size_t[0] * size_t[1] * (3 * 4 + 8) / 2**20) if size_t else math.inf
        self.items = _CachedItems(union, cache=n * per_item_mb <= cache_mb)
        self.positions = _AugmentedPositions(self.items, seed, flip, crop_scale)
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.rank, self.world_size = int(rank), int(world_size)
        self.position = 0  # batches consumed by this rank

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(
            self.positions,
            batch_sampler=_BatchPositions(self.batch_size, self.position, self.rank, self.world_size),
            num_workers=self.workers,
            persistent_workers=False,
        )
        for batch in loader:
            self.position += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "SegmentationData", "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.position = int(state["position"])


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
