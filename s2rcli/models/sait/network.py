"""SAIT: semantically adaptive image-to-image translation (Musto & Zinelli).

UNIT's two coupled auto-encoders with a shared latent space, whose decoders are
told *what* each pixel is: a frozen segmenter ``M`` segments the input image,
and its unnormalised logits condition the decoders' residual blocks through
SPADE, so each region is denormalised according to its class.

Domain ``a`` is synthetic and ``b`` real, as in UNIT: ``translate(x, "a2b")``
is ``G_b(E_a(x), M(x))``.

Architecture (built from UNIT's generator, :class:`~s2rcli.models.unit.UNITGenerator`):

* encoders: UNIT's (Conv7x7, ``n_down`` stride-2 convs, ``n_res`` residual
  blocks, instance norm; the last ``n_shared`` blocks shared by both domains);
  the code is deterministic (``z = h``: the paper lists no KL term);
* decoders: ``n_res`` residual blocks whose norms are instance norm followed by
  SPADE, conditioned on ``M``'s logits resized (bilinearly) to the latent
  size (``spade=False``: UNIT's plain instance-norm blocks, the ablation);
  then UNIT's up-sampling blocks with layer norm, and a Conv7x7 + tanh;
* spectral normalisation on every generator conv (``spectral=True``) except
  SPADE's small embedding convs, and always on the discriminators;
* one multi-scale PatchGAN per domain.

``M`` is a registered segmenter (``segmenter`` + ``segmenter_kwargs``); its
weights travel in the checkpoint (``state_dicts["M"]``), so a SAIT checkpoint
translates on its own.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ...errors import S2RError
from ..blocks import SPADE, MultiScaleDiscriminator, SPADEResBlock, init_weights
from ..registry import create_model
from ..unit.network import DOMAINS, UNITGenerator, _direction


class SAITGenerator(UNITGenerator):
    """UNIT's encoders and decoders, with SPADE residual blocks in the decoders.

    ``decode(z, domain, cond)``: ``cond`` is the segmenter's logits of the image
    that ``z`` was encoded from (``B x cond_channels x H x W``, any size; ignored
    when ``spade=False``).
    """

    def __init__(self, channels: int = 64, n_down: int = 2, n_res: int = 4, n_shared: int = 1, share: bool = True,
                 *, cond_channels: int = 19, spade: bool = True, spade_hidden: int = 128, spectral: bool = True):
        super().__init__(channels, n_down, n_res, n_shared, share)
        self.spade = spade
        if spade:
            def block() -> SPADEResBlock:
                return SPADEResBlock(self.latent_channels, self.latent_channels, cond_channels, spade_hidden,
                                     norm="instance", spectral=False, interpolation="bilinear")

            n_private = n_res - n_shared
            for d in DOMAINS:  # the private residual blocks lead each decoder; the up-sampling tail stays
                self.dec[d] = nn.Sequential(*[block() for _ in range(n_private)], *list(self.dec[d])[n_private:])
            if share:
                self.dec_shared = nn.Sequential(*[block() for _ in range(n_shared)])
            else:
                self.dec_shared = nn.ModuleDict({d: nn.Sequential(*[block() for _ in range(n_shared)])
                                                 for d in DOMAINS})
        init_weights(self, "kaiming")
        if spectral:
            spectral_norm_convs(self)

    def decode(self, z: torch.Tensor, domain: str, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not self.spade:
            return super().decode(z, domain)
        if cond is None:
            raise ValueError("a SPADE decoder needs the segmenter's logits (cond)")
        # every SPADE block works at the latent size: resize the logits once
        cond = F.interpolate(cond, size=z.shape[-2:], mode="bilinear", align_corners=False)
        h = z
        for block in (*self._part(self.dec_shared, domain), *self.dec[domain]):
            h = block(h, cond) if isinstance(block, SPADEResBlock) else block(h)
        return h


def spectral_norm_convs(module: nn.Module) -> nn.Module:
    """Spectral normalisation on every conv of ``module`` except SPADE's embedding convs
    (they map the condition, not the features, as in SPADE's own generator)."""
    in_spade = {id(m) for s in module.modules() if isinstance(s, SPADE) for m in s.modules()}
    for m in list(module.modules()):
        if isinstance(m, nn.Conv2d) and id(m) not in in_spade and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m)
    return module


class SAIT(nn.Module):
    """The registered module: generator ``G``, discriminators ``D["a"]``/``D["b"]`` and the frozen segmenter ``M``.

    Its settings and their defaults are ``SAITConfig`` in ``task.py``.
    """

    input_kind = "image"

    def __init__(self, channels: int, n_down: int, n_res: int, n_shared: int, share: bool, spade: bool,
                 spade_hidden: int, spectral: bool, d_channels: int, d_layers: int, d_scales: int,
                 segmenter: str, segmenter_kwargs: Mapping[str, Any]):
        super().__init__()
        self._g_args = dict(channels=channels, n_down=n_down, n_res=n_res, n_shared=n_shared, share=share,
                            spade=spade, spade_hidden=spade_hidden, spectral=spectral)
        self.M = _frozen(create_model(segmenter, **dict(segmenter_kwargs)))
        self.segmenter, self.segmenter_kwargs = segmenter, dict(segmenter_kwargs)
        self.G = SAITGenerator(**self._g_args, cond_channels=int(self.M.num_classes))
        self.D = nn.ModuleDict({  # initialised first, then spectrally normalised (fresh power-iteration vectors)
            d: spectral_norm_convs(init_weights(MultiScaleDiscriminator(3, d_channels, d_layers, d_scales, norm="none"),
                                                "gaussian"))
            for d in DOMAINS
        })
        self.stride = 2 ** n_down

    @property
    def uses_segmenter(self) -> bool:
        """Whether translation reads ``M`` (the SPADE condition)."""
        return self.G.spade

    def condition(self, x: torch.Tensor) -> torch.Tensor | None:
        """``M``'s unnormalised logits of ``x`` (the SPADE condition), or ``None`` without SPADE."""
        return self.M(x) if self.G.spade else None

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """Translate ``x`` (Bx3xHxW in [-1, 1], H and W multiples of ``stride``), conditioned on ``M(x)``."""
        src, dst = _direction(direction)
        return self.G.decode(self.G.encode(x, src), dst, self.condition(x))

    def attach_segmenter(self, net: nn.Module, name: str, kwargs: Mapping[str, Any]) -> None:
        """Use ``net`` (registered as ``name`` with ``kwargs``) as ``M``. Before training only: when its
        class count differs from the current one, the generator is rebuilt for the new condition."""
        rebuild = int(net.num_classes) != int(self.M.num_classes)
        self.M = _frozen(net)
        self.segmenter, self.segmenter_kwargs = name, dict(kwargs)
        if rebuild:
            self.G = SAITGenerator(**self._g_args, cond_channels=int(net.num_classes))

    def train(self, mode: bool = True) -> "SAIT":
        super().train(mode)
        self.M.eval()  # frozen: its batch-norm statistics never move
        return self

    def load_s2r_state_dicts(self, state_dicts: Mapping[str, Any], prefer_ema: bool = True) -> None:
        key = "G_ema" if prefer_ema and "G_ema" in state_dicts else "G"
        missing = [k for k in (key, "M") if k not in state_dicts]
        if missing:
            raise S2RError(f"the checkpoint has no {' or '.join(missing)} weights",
                           hint="pass a checkpoint written by `s2r train sait`")
        self.G.load_state_dict(state_dicts[key])
        self.M.load_state_dict(state_dicts["M"])
        if "D" in state_dicts:
            self.D.load_state_dict(state_dicts["D"])


def _frozen(net: nn.Module) -> nn.Module:
    return net.requires_grad_(False).eval()
