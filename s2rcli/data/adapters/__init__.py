"""The built-in dataset adapters, one file each; importing one registers its kind.

A new kind is one new file here with a ``@register_adapter`` function, plus its
import line below.
"""

from . import carla, cityscapes, demo, folder, gta5, mapillary, synscapes, synthia  # noqa: F401  (registration)
