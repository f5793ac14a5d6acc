"""Frozen VGG feature extractors and the perceptual losses built on them."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.vgg import cfgs, make_layers

from .. import pretrained

# Names of every ReLU in torchvision's VGG ``features``, in order, e.g. "relu3_4".
_VGG_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_relu_names(arch: str) -> list[str]:
    return [f"relu{b + 1}_{i + 1}" for b, n in enumerate(_VGG_BLOCKS[arch]) for i in range(n)]


class VGGFeatures(nn.Module):
    """Frozen VGG16/19 returning the activations of named ReLU layers.

    Input is an image in [-1, 1]; ImageNet normalisation happens inside.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        layers: ReLU names to return, e.g. ``("relu1_2", "relu2_2", "relu3_3")``.
        weights: a file path, ``"random"`` (tests, CPU demo), or ``None`` for
            the cache / download (see :mod:`s2rcli.pretrained`).
    """

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"),
                 weights: str | None = None):
        super().__init__()
        if arch not in _VGG_BLOCKS:
            raise ValueError(f"arch must be vgg16 or vgg19, got {arch!r}")
        names = vgg_relu_names(arch)
        unknown = [layer for layer in layers if layer not in names]
        if unknown:
            raise ValueError(f"unknown {arch} layers {unknown}; valid: {names}")
        # Only the convolutional stack: the 120M-parameter classifier is never used.
        features = make_layers(cfgs["D" if arch == "vgg16" else "E"], batch_norm=False)
        for module in features.modules():  # torchvision's VGG initialisation, for the random choice
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        state = pretrained.load_state_dict(arch, weights)
        if state is not None:
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        # Keep the feature stack only up to the deepest requested layer.
        relu_positions = [i for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
        self.layer_index = {names[k]: pos for k, pos in enumerate(relu_positions)}
        self.layers = tuple(layers)
        last = max(self.layer_index[layer] for layer in layers)
        self.features = nn.Sequential(*[m if not isinstance(m, nn.ReLU) else nn.ReLU(inplace=False)
                                         for m in list(features)[: last + 1]])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":  # always frozen
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: Sequence[str] | None = None) -> list[torch.Tensor]:
        """The activations of :attr:`layers`, or of ``layers`` (a subset of them): the stack then
        stops at the deepest one, so small images need not survive the deeper poolings."""
        layers = self.layers if layers is None else tuple(layers)
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} are not among this extractor's {list(self.layers)}")
        x = ((x + 1) / 2 - self.mean) / self.std
        wanted = {self.layer_index[layer]: layer for layer in layers}
        last = max(wanted, default=-1)
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.features[: last + 1]):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return [out[layer] for layer in layers]


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG activations of two images (pix2pixHD-style)."""

    def __init__(self, features: VGGFeatures, weights: Sequence[float] | None = None):
        super().__init__()
        self.features = features
        n = len(features.layers)
        self.weights = list(weights) if weights is not None else [1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0][-n:]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.features(x), self.features(y.detach())
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(self.weights, fx, fy))


_FROZEN: dict[tuple, VGGFeatures] = {}
_FROZEN_KEEP = 2  # a model may use two (e.g. VGG16 in a discriminator, VGG19 for its perceptual loss)


def frozen_vgg(arch: str, layers: Sequence[str], weights: str | None, device) -> VGGFeatures:
    """A frozen :class:`VGGFeatures`, built once per process for the same arguments
    (building one means initialising or reading ~500 MB of weights; it holds no state).

    A random VGG is drawn from a fixed seed, so it is the same function in every
    run: resumed runs continue exactly and runs with different seeds compare.
    The last two distinct ones are kept.
    """
    key = (arch, tuple(layers), None if weights is None else str(weights), str(torch.device(device)))
    if key not in _FROZEN:
        while len(_FROZEN) >= _FROZEN_KEEP:  # they are large: drop the oldest
            _FROZEN.pop(next(iter(_FROZEN)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _FROZEN[key] = VGGFeatures(arch, tuple(layers), weights=weights).to(device)
    return _FROZEN[key]
