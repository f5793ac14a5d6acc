"""Segmenters: a small ERFNet-like network that trains from scratch on a CPU
("fastseg"), and torchvision's DeepLabV3 and FCN with a ResNet-50 backbone.

They serve ``segment-eval`` (train on synthetic / translated / real sets, test
on real), SP-Feat for unlabelled real images, and later the SAIT adaptation
stage. All of them share the segmenter contract
(:class:`s2rcli.models.contract.SegmenterModel`):

- ``forward(x)``: ``x`` is ``Bx3xHxW`` in ``[-1, 1]``; returns logits ``BxCxHxW``
  at the input size, for any ``H`` and ``W``;
- ``num_classes``; ``load_s2r_state_dicts``. Their training task (one phase ``"S"``,
  cross-entropy with 255 ignored) is in ``task.py`` beside this file.

The checkpoint stores the network under ``state_dicts["S"]``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from torchvision.models import segmentation as tvseg

from ...errors import S2RError
from ...pretrained import load_state_dict

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

    Defaults (ERFNet's) are ``FastSegConfig`` in ``task.py``.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int],
        encoder_blocks: Sequence[int],
        decoder_blocks: Sequence[int],
        dropout: Sequence[float],
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
