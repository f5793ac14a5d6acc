"""Building blocks shared by every model family: each defined once.

``layers``: conv/residual/up-sampling blocks, norms, PatchGAN and multi-scale
discriminators, weight initialisation. ``spade``: SPADE normalisation, SPADE
residual blocks, spectral norm switch and the Haar wavelet transform. ``dgnorm``:
Double-Guided Normalisation (label + global feature), its residual block and the
global label encoder.
"""

from .dgnorm import DGNorm, DGResBlock, GlobalEncoder
from .layers import (ConvBlock, LayerNorm2d, MultiScaleDiscriminator, PatchDiscriminator, ResBlock, UpBlock,
                     init_weights, make_activation, make_norm)
from .spade import SPADE, SPADEResBlock, haar_dwt, haar_idwt, maybe_spectral, param_free_norm

__all__ = ["DGNorm", "DGResBlock", "GlobalEncoder", "ConvBlock", "LayerNorm2d", "MultiScaleDiscriminator",
           "PatchDiscriminator", "ResBlock", "UpBlock", "init_weights", "make_activation", "make_norm", "SPADE",
           "SPADEResBlock", "haar_dwt", "haar_idwt", "maybe_spectral", "param_free_norm"]
