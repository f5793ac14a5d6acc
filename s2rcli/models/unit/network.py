"""UNIT: unsupervised image-to-image translation with a shared latent space.

Liu, Breuel & Kautz 2017, as used by the UNIT + smart batch method (docs/papers.md: synthetic -> real with the
SP-Feat smart batch loader). Two VAE-GANs, one per domain: domain ``a`` is
synthetic, domain ``b`` is real, so ``translate(x, "a2b")`` makes synthetic
images look real.

Architecture:

* encoder: Conv7x7 (3 -> C, IN, ReLU), ``n_down`` x Conv4x4 stride 2 (doubling
  channels, IN, ReLU), ``n_res`` residual blocks with IN;
* reduced VAE: in training the code is ``z = h + N(0, I)`` and the KL term is
  ``mean(h^2)``; at test time ``z = h``;
* decoder: ``n_res`` residual blocks (IN), ``n_down`` x [nearest x2, Conv5x5,
  LayerNorm, ReLU], Conv7x7, tanh;
* the last ``n_shared`` encoder blocks and the first ``n_shared`` decoder
  blocks are shared by both domains (``share=True``): that is what ties the two
  latent spaces together;
* one multi-scale PatchGAN discriminator per domain (LSGAN by default).

``skip=True`` (an s2r option, not in the paper) makes each decoder a residual one: it
returns ``tanh(f(z) + atanh(x))``, where ``x`` is the image that was encoded and ``f(z)`` the
decoder's last convolution, zero at the start. A translation then starts as the identity and
learns only what changes between the domains; the fine detail the 1/4-resolution latent cannot
carry (lane marks, poles, small objects) passes through from the source image. On the street demo
world it did not help (docs/fidelity.md, ablations: 28% of the raw-to-real gap closed against 46%
without it, 2000 steps): the translations stayed close to the identity. It is off in every preset.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import S2RError
from ..blocks import ConvBlock, MultiScaleDiscriminator, ResBlock, UpBlock, init_weights

DOMAINS = ("a", "b")
SKIP_CLAMP = 0.999  # |x| limit before atanh in residual decoders (atanh(0.999) = 3.8)
DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}

class UNITGenerator(nn.Module):
    """Both domains' encoders and decoders; ``encode(x, d)`` and ``decode(z, d)``."""

    def __init__(self, channels: int = 64, n_down: int = 2, n_res: int = 4, n_shared: int = 1, share: bool = True,
                 skip: bool = False):
        super().__init__()
        if not 0 <= n_shared <= n_res:
            raise ValueError(f"n_shared must be in [0, n_res={n_res}], got {n_shared}")
        latent = channels * 2 ** n_down
        self.latent_channels = latent
        self.share, self.skip = share, skip

        def encoder_head() -> nn.Sequential:
            layers: list[nn.Module] = [ConvBlock(3, channels, 7, norm="in", act="relu")]
            ch = channels
            for _ in range(n_down):
                layers.append(ConvBlock(ch, ch * 2, 4, 2, norm="in", act="relu", padding=1))
                ch *= 2
            layers += [ResBlock(latent, norm="in") for _ in range(n_res - n_shared)]
            return nn.Sequential(*layers)

        def decoder_tail() -> nn.Sequential:
            layers: list[nn.Module] = [ResBlock(latent, norm="in") for _ in range(n_res - n_shared)]
            ch = latent
            for _ in range(n_down):
                layers.append(UpBlock(ch, ch // 2, 5, norm="ln", act="relu"))
                ch //= 2
            layers.append(ConvBlock(ch, 3, 7, norm="none", act="none" if skip else "tanh"))
            return nn.Sequential(*layers)

        def shared_blocks() -> nn.Sequential:
            return nn.Sequential(*[ResBlock(latent, norm="in") for _ in range(n_shared)])

        self.enc = nn.ModuleDict({d: encoder_head() for d in DOMAINS})
        self.dec = nn.ModuleDict({d: decoder_tail() for d in DOMAINS})
        if share:
            self.enc_shared = shared_blocks()
            self.dec_shared = shared_blocks()
        else:
            self.enc_shared = nn.ModuleDict({d: shared_blocks() for d in DOMAINS})
            self.dec_shared = nn.ModuleDict({d: shared_blocks() for d in DOMAINS})

    def _part(self, module: nn.Module, domain: str) -> nn.Module:
        return module if self.share else module[domain]

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """The latent mean ``h`` (the VAE's code before noise)."""
        return self._part(self.enc_shared, domain)(self.enc[domain](x))

    def decode(self, z: torch.Tensor, domain: str, source: torch.Tensor | None = None) -> torch.Tensor:
        """The image of code ``z`` in ``domain``; a residual decoder (``skip``) adds it to ``source``, the
        image that was encoded into ``z``."""
        out = self.dec[domain](self._part(self.dec_shared, domain)(z))
        if not self.skip:
            return out
        if source is None:
            raise ValueError("a residual (skip) decoder needs the source image")
        return torch.tanh(out + torch.atanh(source.clamp(-SKIP_CLAMP, SKIP_CLAMP)))

    def zero_residuals(self) -> None:
        """Residual decoders start as the identity: their last convolution is zero."""
        if self.skip:
            for d in DOMAINS:
                last = self.dec[d][-1][0]
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)


class UNIT(nn.Module):
    """The registered module: generator ``G`` (both VAEs) and discriminators ``D["a"]``, ``D["b"]``.

    Its settings and their defaults are ``UNITConfig`` in ``task.py``.
    """

    input_kind = "image"

    def __init__(self, channels: int, n_down: int, n_res: int, n_shared: int, share: bool,
                 d_channels: int, d_layers: int, d_scales: int, skip: bool = False):
        super().__init__()
        self.G = init_weights(UNITGenerator(channels, n_down, n_res, n_shared, share, skip), "kaiming")
        self.G.zero_residuals()
        self.D = nn.ModuleDict({
            d: init_weights(MultiScaleDiscriminator(3, d_channels, d_layers, d_scales, norm="none"), "gaussian")
            for d in DOMAINS
        })
        self.stride = 2 ** n_down

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """Translate ``x`` (Bx3xHxW in [-1, 1], H and W multiples of ``stride``) with ``z = h``."""
        src, dst = _direction(direction)
        return self.G.decode(self.G.encode(x, src), dst, x)

    def load_s2r_state_dicts(self, state_dicts: dict[str, Any], prefer_ema: bool = True) -> None:
        key = "G_ema" if prefer_ema and "G_ema" in state_dicts else "G"
        if key not in state_dicts:
            raise S2RError("the checkpoint has no generator weights (G)", hint="pass a checkpoint written by `s2r train unit`")
        self.G.load_state_dict(state_dicts[key])
        if "D" in state_dicts:
            self.D.load_state_dict(state_dicts["D"])


def _direction(direction: str) -> tuple[str, str]:
    if direction not in DIRECTIONS:
        raise S2RError(f"unknown direction {direction!r}", hint="use a2b (synthetic -> real) or b2a (real -> synthetic)")
    return DIRECTIONS[direction]


