"""The demo world: two procedural street-scene domains that need no download.

``write_demo_world(out)`` (``s2r prepare demo --out DIR``) writes::

    DIR/synthetic/{images,labels}/NNNNN.png   flat, game-like renderings of mostly built-up streets
    DIR/real/{images,labels}/NNNNN.png        textured, noisy, colour-shifted "photos" of mostly green suburbs
    DIR/real_val/{images,labels}/NNNNN.png    more of the real domain, for evaluation
    DIR/manifest.json                         seed, size, counts, per-domain class pixel frequencies

Labels are cityscapes19 trainIds (8-bit grey PNG). Each scene is laid out in one-point
perspective with a z-buffer: ground bands (road with lane marks, verges, sidewalks, gardens),
building facades along the street, fences and low walls, and billboard objects (cars, trucks,
buses, people, cyclists, poles with signs or traffic lights, trees), over a far skyline and sky.

The two domains differ in two ways, on purpose:

- **class distribution**: both draw scenes from the same generator, but synthetic scenes are mostly
  the ``urban`` style (tall facades, many cars and poles) and real scenes mostly ``suburban``
  (gardens, trees, low houses, fewer cars);
- **appearance**: synthetic pixels take flat per-class colours with flat shading; real pixels take
  different, duller and partly overlapping class colours (e.g. real buildings are close to synthetic
  sidewalks), multi-scale texture, per-image lighting and white balance, vignetting, blur and sensor
  noise. Within each domain a class stays recognisable from its local colour and texture, so an
  image translator can learn the mapping, but a segmenter trained on raw synthetic images does
  not transfer to the real ones as is.

Every image is a pure function of ``(seed, domain, index)``, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ..errors import S2RError
from ..utils.atomic import atomic_save_image, atomic_write_json
from . import io
from .datasets import open_dataset
from .labels import get_label_space, overlay

DOMAINS = ("synthetic", "real", "real_val")
GENERATOR_VERSION = 1

# --------------------------------------------------------------------------------------------------
# Materials: what a pixel is made of. Each maps to one cityscapes19 trainId and has a colour per domain.
# Columns: name, trainId, synthetic RGB, real RGB, real texture amplitudes (fine, mid, low).

_MATERIALS = [
    ("sky", 10, (110, 170, 240), (176, 196, 214), (0.01, 0.02, 0.10)),
    ("road", 0, (88, 88, 100), (108, 104, 100), (0.07, 0.04, 0.07)),
    ("lane_mark", 0, (235, 235, 235), (200, 196, 180), (0.06, 0.05, 0.05)),
    ("sidewalk", 1, (176, 164, 150), (150, 144, 136), (0.05, 0.05, 0.06)),
    ("building", 2, (150, 110, 90), (160, 150, 134), (0.04, 0.06, 0.08)),
    ("window", 2, (70, 90, 120), (70, 72, 78), (0.04, 0.08, 0.06)),
    ("wall", 3, (196, 186, 140), (146, 134, 118), (0.06, 0.06, 0.06)),
    ("fence", 4, (126, 96, 60), (112, 100, 84), (0.08, 0.06, 0.05)),
    ("pole", 5, (62, 62, 70), (92, 92, 96), (0.04, 0.03, 0.03)),
    ("light_box", 6, (250, 170, 30), (60, 58, 50), (0.04, 0.03, 0.03)),
    ("lamp", 6, (255, 60, 40), (230, 120, 90), (0.02, 0.02, 0.02)),
    ("sign", 7, (230, 220, 20), (200, 170, 70), (0.04, 0.03, 0.03)),
    ("vegetation", 8, (50, 160, 50), (72, 98, 48), (0.20, 0.22, 0.10)),
    ("trunk", 8, (110, 80, 40), (80, 70, 56), (0.10, 0.08, 0.05)),
    ("terrain", 9, (140, 200, 80), (124, 132, 76), (0.13, 0.12, 0.10)),
    ("person", 11, (210, 40, 60), (120, 70, 70), (0.05, 0.05, 0.03)),
    ("skin", 11, (240, 200, 160), (200, 160, 130), (0.03, 0.03, 0.03)),
    ("rider", 12, (255, 100, 0), (160, 90, 60), (0.05, 0.05, 0.03)),
    ("bicycle", 18, (140, 20, 60), (90, 50, 60), (0.05, 0.04, 0.03)),
    ("car", 13, (30, 60, 200), (60, 70, 110), (0.03, 0.04, 0.04)),
    ("glass", 13, (150, 200, 230), (60, 66, 74), (0.04, 0.06, 0.04)),
    ("wheel", 13, (20, 20, 20), (34, 32, 32), (0.04, 0.03, 0.03)),
    ("truck", 14, (200, 200, 210), (150, 148, 140), (0.04, 0.05, 0.05)),
    ("bus", 15, (240, 150, 30), (170, 110, 60), (0.04, 0.05, 0.05)),
]
M = {name: i for i, (name, *_rest) in enumerate(_MATERIALS)}
MATERIAL_TRAIN_ID = np.array([m[1] for m in _MATERIALS], np.uint8)
_TEXTURE = np.array([m[4] for m in _MATERIALS], np.float32)

# Colour variants (per instance): cars, buildings, clothes. Variant 0 is the material's own colour.
N_VARIANTS = 6
_VARIANTS = {
    "car": ([(30, 60, 200), (200, 30, 30), (230, 230, 230), (30, 30, 36), (40, 160, 80), (170, 176, 182)],
            [(60, 70, 110), (128, 56, 50), (196, 196, 190), (40, 40, 44), (70, 96, 74), (138, 138, 136)]),
    "building": ([(150, 110, 90), (186, 170, 150), (120, 120, 136), (176, 130, 100), (140, 150, 160), (200, 190, 170)],
                 [(160, 150, 134), (132, 100, 84), (118, 116, 118), (170, 160, 144), (150, 130, 110), (140, 138, 130)]),
    "person": ([(210, 40, 60), (40, 40, 160), (60, 140, 60), (230, 200, 40), (30, 30, 30), (240, 240, 240)],
               [(120, 70, 70), (60, 66, 100), (80, 96, 70), (150, 130, 80), (46, 44, 44), (176, 170, 164)]),
    "rider": ([(255, 100, 0), (255, 60, 160), (0, 200, 200), (255, 100, 0), (255, 60, 160), (0, 200, 200)],
              [(160, 90, 60), (150, 84, 110), (60, 120, 120), (160, 90, 60), (150, 84, 110), (60, 120, 120)]),
}


def _palettes() -> tuple[np.ndarray, np.ndarray]:
    synthetic = np.zeros((len(_MATERIALS), N_VARIANTS, 3), np.float32)
    real = np.zeros_like(synthetic)
    for i, (name, _tid, syn, rea, _tex) in enumerate(_MATERIALS):
        synthetic[i], real[i] = syn, rea
        if name in _VARIANTS:
            synthetic[i], real[i] = _VARIANTS[name]
    return synthetic, real


SYNTHETIC_PALETTE, REAL_PALETTE = _palettes()

# --------------------------------------------------------------------------------------------------
# Scene styles. Synthetic draws mostly "urban", real mostly "suburban": that is the class shift
# (the shares are per look, see LOOKS).


@dataclass(frozen=True)
class Style:
    road_half: tuple[float, float]
    verge: tuple[float, float]           # terrain strip between road and sidewalk
    sidewalk: tuple[float, float]
    garden: tuple[float, float]          # terrain between sidewalk and facade
    facade_p: float                      # chance that a block along the street has a building
    facade_height: tuple[float, float]
    front_p: float                       # chance of a fence or low wall along a garden block
    cars: float                          # expected moving cars
    parked: float
    heavy_p: float                       # chance that a vehicle is a truck or a bus
    persons: float
    cyclists: float
    pole_gap: tuple[float, float]
    pole_p: float
    street_trees: float
    garden_trees: float
    skyline: str                         # "buildings" or "trees"


URBAN = Style(road_half=(4.0, 7.0), verge=(0.0, 0.0), sidewalk=(2.0, 4.0), garden=(0.0, 0.0), facade_p=0.92,
              facade_height=(9.0, 30.0), front_p=0.1, cars=4.0, parked=3.0, heavy_p=0.15, persons=3.0,
              cyclists=0.4, pole_gap=(8.0, 16.0), pole_p=0.85, street_trees=0.8, garden_trees=0.0,
              skyline="buildings")
SUBURBAN = Style(road_half=(3.0, 4.5), verge=(1.0, 3.0), sidewalk=(1.2, 2.0), garden=(4.0, 12.0), facade_p=0.45,
                 facade_height=(3.5, 8.0), front_p=0.6, cars=1.2, parked=0.8, heavy_p=0.05, persons=1.0,
                 cyclists=0.3, pole_gap=(20.0, 40.0), pole_p=0.5, street_trees=2.0, garden_trees=7.0,
                 skyline="trees")

CAMERA_HEIGHT = 1.6
FAR = 160.0


# --------------------------------------------------------------------------------------------------
# Looks: how a world renders. "street" is the default world; "dusk" is a second, differently
# rendered world for validation (other palettes, textures, light, blur, noise, sensor artefacts,
# object proportions and class mix), so that a recipe tuned on one is checked on the other.


@dataclass(frozen=True)
class Look:
    synthetic_palette: np.ndarray          # materials x variants x RGB
    real_palette: np.ndarray
    texture: np.ndarray                    # materials x (fine, mid, low) texture amplitudes of the real domain
    urban_share: dict                      # share of urban scenes per domain (the class shift)
    shapes: dict                           # object -> (width scale, height scale)
    gain: tuple[float, float]              # real exposure
    balance: tuple[float, float]           # real white balance, per channel
    tint: tuple[float, float, float]       # real colour cast
    vignette: float
    blur: tuple[float, float]              # real Gaussian blur sigma
    noise: tuple[float, float]             # real sensor noise sigma
    sensor: bool = False                   # chromatic aberration, colour noise and JPEG blocks on real images
    outlines: bool = False                 # dark cel-shading outlines on synthetic images


def _shift_hue(palette: np.ndarray, degrees: float, saturation: float, brightness: float) -> np.ndarray:
    hsv = cv2.cvtColor(np.clip(palette, 0, 255).astype(np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + degrees / 2) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * brightness, 0, 255)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    return rgb.reshape(palette.shape)


def _dusk_palettes() -> tuple[np.ndarray, np.ndarray]:
    """Toon-like synthetic colours (hue-rotated, saturated) and dim, cool, jittered real colours."""
    jitter = np.random.default_rng(2024).uniform(-18, 18, REAL_PALETTE.shape).astype(np.float32)
    synthetic = _shift_hue(SYNTHETIC_PALETTE, 40.0, 1.3, 1.05)
    synthetic[M["sky"]] = (240, 150, 110)  # an orange dusk sky in the game
    real = 0.8 * REAL_PALETTE + 0.2 * REAL_PALETTE.mean(axis=-1, keepdims=True) + jitter + 10
    real[M["sky"]] = (120, 126, 150)
    real[M["lamp"]] = (255, 190, 90)
    return np.clip(synthetic, 0, 255), np.clip(real, 0, 255)


_DUSK_SYNTHETIC, _DUSK_REAL = _dusk_palettes()

LOOKS = {
    "street": Look(SYNTHETIC_PALETTE, REAL_PALETTE, _TEXTURE, {"synthetic": 0.85, "real": 0.2, "real_val": 0.2},
                   shapes={}, gain=(0.72, 1.15), balance=(0.9, 1.1), tint=(1.0, 1.0, 1.0), vignette=0.45,
                   blur=(0.6, 1.1), noise=(2.0, 5.0)),
    "dusk": Look(_DUSK_SYNTHETIC, _DUSK_REAL, np.clip(_TEXTURE * 1.25 + 0.01, 0, 0.3),
                 {"synthetic": 0.6, "real": 0.35, "real_val": 0.35},
                 shapes={"car": (1.2, 0.85), "heavy": (1.1, 1.15), "person": (0.8, 1.12), "cyclist": (0.9, 1.05),
                         "pole": (1.6, 0.8), "tree": (0.75, 0.8)},
                 gain=(0.75, 1.1), balance=(0.88, 1.12), tint=(1.08, 0.97, 0.88), vignette=0.55,
                 blur=(0.8, 1.3), noise=(3.0, 6.0), sensor=True, outlines=True),
}
STYLES = tuple(LOOKS)


class _Canvas:
    """Material, variant, shading and depth per pixel, drawn with a z-buffer."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.h, self.w = height, width
        self.mat = np.full((height, width), M["sky"], np.uint8)
        self.var = np.zeros((height, width), np.uint8)
        self.shade = np.ones((height, width), np.float32)
        self.depth = np.full((height, width), np.inf, np.float32)
        self.vy = height * rng.uniform(0.36, 0.48)          # horizon row
        self.vx = width * rng.uniform(0.36, 0.64)           # vanishing point column
        self.f = width * rng.uniform(0.7, 0.9)              # focal length in pixels
        self.ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
        self.xs = np.arange(width, dtype=np.float32)[None, :] + 0.5

    def put(self, mask: np.ndarray, depth, mat, var=0, shade=1.0, region=(slice(None), slice(None))) -> None:
        """Draw ``mat`` where ``mask`` holds and ``depth`` is nearer than what is there (in ``region``)."""
        zbuf = self.depth[region]
        draw = mask & (depth < zbuf)
        if not draw.any():
            return
        zbuf[draw] = np.broadcast_to(depth, draw.shape)[draw]
        for target, value in ((self.mat[region], mat), (self.var[region], var), (self.shade[region], shade)):
            target[draw] = np.broadcast_to(value, draw.shape)[draw]

    def billboard(self, x_m: float, z: float, width_m: float, height_m: float, painter,
                  shape: tuple[float, float] = (1.0, 1.0)) -> None:
        """An upright object at lateral ``x_m`` and depth ``z``; ``painter(u, v)`` yields (mask, mat, var, shade)
        layers from local metric coordinates (u across from the centre, v up from the ground).
        ``shape`` stretches the object (width, height) without changing the painter."""
        if shape != (1.0, 1.0):
            sx, sy, inner = shape[0], shape[1], painter
            width_m, height_m = width_m * sx, height_m * sy
            painter = lambda u, v: inner(u / sx, v / sy)  # noqa: E731
        if z < 1.0:
            return
        s = self.f / z
        xc, yb = self.vx + s * x_m, self.vy + s * CAMERA_HEIGHT
        x0, x1 = int(np.floor(xc - s * width_m / 2)), int(np.ceil(xc + s * width_m / 2))
        y0, y1 = int(np.floor(yb - s * height_m)), int(np.ceil(yb))
        x0, x1, y0, y1 = max(x0, 0), min(x1, self.w), max(y0, 0), min(y1, self.h)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return
        region = (slice(y0, y1), slice(x0, x1))
        u = (self.xs[:, x0:x1] - xc) / s
        v = (yb - self.ys[y0:y1]) / s
        for mask, mat, var, shade in painter(u, v):
            self.put(mask, np.float32(z), mat, var, shade, region)


def _poisson(rng, lam: float) -> int:
    return int(rng.poisson(lam)) if lam > 0 else 0


def _draw_ground(c: _Canvas, rng, st: Style, sides: dict) -> None:
    below = np.broadcast_to(c.ys > c.vy + 0.25, (c.h, c.w))
    dy = np.maximum(c.ys - c.vy, 0.25)
    z = np.minimum(c.f * CAMERA_HEIGHT / dy, FAR)
    x = (c.xs - c.vx) * z / c.f
    ax = np.abs(x)
    z = np.broadcast_to(z, (c.h, c.w))
    road_half = sides["road_half"]
    mats = np.full((c.h, c.w), M["terrain"] if st is SUBURBAN else M["sidewalk"], np.uint8)
    for sign, side in ((-1, sides["left"]), (1, sides["right"])):
        on = (x * sign) >= 0
        bands = [(road_half + side["verge"], M["terrain"]), (side["walk_out"], M["sidewalk"]),
                 (side["facade_x"], M["terrain"] if side["garden"] > 0 else M["sidewalk"])]
        for limit, mat in reversed(bands):
            mats[on & (ax < limit)] = mat
    road = ax < road_half
    mats[road] = M["road"]
    lane = road & (np.abs(x - sides["lane_x"]) < 0.12) & ((z % 9.0) < 4.5)
    mats[lane] = M["lane_mark"]
    c.put(below, z, mats)


def _draw_skyline(c: _Canvas, rng, st: Style) -> None:
    """A far band of buildings or trees just above the horizon."""
    heights = np.zeros(c.w, np.float32)
    mats = np.zeros(c.w, np.uint8)
    x = 0
    while x < c.w:
        span = int(rng.integers(max(2, c.w // 40), max(3, c.w // 8)))
        if st.skyline == "buildings" or rng.random() < 0.15:
            heights[x:x + span] = rng.uniform(0.05, 0.45) * c.vy
            mats[x:x + span] = M["building"]
        else:
            heights[x:x + span] = rng.uniform(0.03, 0.14) * c.vy
            mats[x:x + span] = M["vegetation"]
        x += span
    wobble = cv2.resize(rng.normal(0, 1, (1, max(2, c.w // 6))).astype(np.float32), (c.w, 1))[0]
    is_tree = mats == M["vegetation"]
    heights[is_tree] += wobble[is_tree] * 0.03 * c.vy
    mask = (c.ys > c.vy - heights[None, :]) & (c.ys <= c.vy + 0.5)
    c.put(mask, np.float32(FAR * 1.5), mats[None, :], rng.integers(0, N_VARIANTS), 0.9)


def _blocks(rng, z0: float, z1: float, length: tuple[float, float]):
    z = z0
    while z < z1:
        step = rng.uniform(*length)
        yield z, min(z + step, z1)
        z += step


def _draw_plane(c: _Canvas, sign: int, x_plane: float, segments, shade: float) -> None:
    """Vertical planes parallel to the street at lateral distance ``x_plane`` on one side.

    ``segments``: (z_start, z_end, height, material, variant, pattern); pattern is "windows", "slats" or None.
    """
    if not segments:
        return
    dx = (c.xs - c.vx) * sign
    cols = dx[0] > 0.5
    if not cols.any():
        return
    z = np.where(dx > 0.5, c.f * x_plane / np.maximum(dx, 0.5), 1e9)            # 1 x W (1e9: never hit)
    height = CAMERA_HEIGHT + (c.vy - c.ys) * z / c.f                            # H x W metres above ground
    for z0, z1, h, mat, var, pattern in segments:
        in_seg = (z >= max(z0, 1.0)) & (z < z1)
        if not in_seg.any():
            continue
        mask = in_seg & (height >= 0) & (height <= h)
        if not mask.any():
            continue
        mats = np.full((c.h, c.w), mat, np.uint8)
        shades = np.full((c.h, c.w), shade, np.float32)
        if pattern == "windows":
            win = ((z % 3.6) > 1.1) & ((z % 3.6) < 2.6) & ((height % 3.2) > 1.2) & ((height % 3.2) < 2.4) \
                & (height > 1.0) & (height < h - 0.6)
            mats[win] = M["window"]
        elif pattern == "slats":  # gaps between fence boards: darker, same class
            shades[np.broadcast_to((z % 0.5) < 0.15, shades.shape)] *= 0.6
        c.put(mask, np.broadcast_to(z, mask.shape), mats, var, shades)


def _car(kind: str, var: int):
    def paint(u, v):
        au = np.abs(u)
        if kind == "car":
            yield (au < 0.9) & (v > 0.25) & (v < 0.95), M["car"], var, 1.0
            yield (au < 0.72) & (v >= 0.95) & (v < 1.45), M["car"], var, 0.95
            yield (au < 0.6) & (v >= 1.0) & (v < 1.38), M["glass"], 0, 1.0
            yield (au > 0.45) & (au < 0.85) & (v <= 0.32), M["wheel"], 0, 1.0
            yield (au < 0.85) & (v > 0.45) & (v < 0.55), M["car"], var, 0.7      # bumper line
        elif kind == "truck":
            yield (au < 1.2) & (v > 0.4) & (v < 3.2), M["truck"], 0, 1.0
            yield (au > 0.6) & (au < 1.15) & (v <= 0.45), M["wheel"], 0, 1.0
        else:  # bus
            yield (au < 1.25) & (v > 0.35) & (v < 3.1), M["bus"], 0, 1.0
            yield (au < 1.1) & (v > 1.6) & (v < 2.6), M["glass"], 0, 1.0
            yield (au > 0.6) & (au < 1.2) & (v <= 0.4), M["wheel"], 0, 1.0
    return paint


def _person(var: int, tall: float):
    def paint(u, v):
        v = v / tall
        yield (np.abs(u) < 0.2) & (v < 0.82) & (np.abs(np.abs(u) - 0.1) < 0.08), M["person"], (var + 1) % N_VARIANTS, 0.8
        yield (np.abs(u) < 0.23) & (v >= 0.8) & (v < 1.45), M["person"], var, 1.0
        yield (u ** 2 + (v - 1.58) ** 2) < 0.12 ** 2, M["skin"], 0, 1.0
    return paint


def _cyclist(var: int):
    def paint(u, v):
        wheel = ((np.abs(u) - 0.45) ** 2 + (v - 0.33) ** 2)
        yield (wheel < 0.33 ** 2) & (wheel > 0.24 ** 2), M["bicycle"], 0, 1.0
        yield (np.abs(u) < 0.5) & (np.abs(v - 0.65) < 0.04), M["bicycle"], 0, 1.0
        yield (np.abs(u) < 0.22) & (v >= 0.8) & (v < 1.5), M["rider"], var, 1.0
        yield (u ** 2 + (v - 1.62) ** 2) < 0.12 ** 2, M["skin"], 0, 1.0
    return paint


def _pole(height: float, top: str):
    def paint(u, v):
        yield (np.abs(u) < 0.08) & (v < height), M["pole"], 0, 1.0
        if top == "sign":
            yield (u ** 2 + (v - height + 0.35) ** 2) < 0.33 ** 2, M["sign"], 0, 1.0
        elif top == "light":
            box = (np.abs(u) < 0.2) & (v > height - 0.95) & (v < height)
            yield box, M["light_box"], 0, 1.0
            lamp = (u ** 2 + (v - height + 0.2) ** 2) < 0.1 ** 2
            yield box & lamp, M["lamp"], 0, 1.0
    return paint


def _tree(trunk_h: float, rx: float, ry: float, phase: np.ndarray):
    def paint(u, v):
        yield (np.abs(u) < 0.16) & (v < trunk_h + ry * 0.3), M["trunk"], 0, 1.0
        dv = v - (trunk_h + ry * 0.8)
        angle = np.arctan2(dv, u)
        wobble = 1 + 0.12 * np.sin(3 * angle + phase[0]) + 0.08 * np.sin(7 * angle + phase[1])
        yield (u / rx) ** 2 + (dv / ry) ** 2 < wobble ** 2, M["vegetation"], 0, 1.0
    return paint


def render_scene(rng: np.random.Generator, height: int, width: int, urban: bool, look: Look | None = None) -> _Canvas:
    """Lay out and rasterise one street scene (materials, variants, shading)."""
    st = URBAN if urban else SUBURBAN
    shape = (look or LOOKS["street"]).shapes
    one = (1.0, 1.0)
    c = _Canvas(height, width, rng)
    road_half = rng.uniform(*st.road_half)
    sides = {"road_half": road_half, "lane_x": rng.choice([0.0, rng.uniform(-0.3, 0.3) * road_half])}
    for name in ("left", "right"):
        verge = rng.uniform(*st.verge) if rng.random() < 0.9 else 0.0
        walk = rng.uniform(*st.sidewalk)
        garden = rng.uniform(*st.garden) if st.garden[1] > 0 else (rng.uniform(0.5, 2.0) if rng.random() < 0.15 else 0)
        walk_out = road_half + verge + walk
        sides[name] = {"verge": verge, "walk_out": walk_out, "garden": garden, "facade_x": walk_out + garden}

    _draw_skyline(c, rng, st)
    _draw_ground(c, rng, st, sides)

    for sign, name in ((-1, "left"), (1, "right")):
        side = sides[name]
        facades = []
        for z0, z1 in _blocks(rng, 2.0, FAR, (6.0, 22.0)):
            if rng.random() < st.facade_p:
                facades.append((z0, z1, rng.uniform(*st.facade_height), M["building"],
                                int(rng.integers(N_VARIANTS)), "windows"))
        _draw_plane(c, sign, side["facade_x"], facades, 0.82 if sign < 0 else 1.0)
        fronts = []
        for z0, z1 in _blocks(rng, 2.0, 80.0, (5.0, 20.0)):
            if rng.random() < st.front_p:
                if rng.random() < 0.6:
                    fronts.append((z0, z1, rng.uniform(0.9, 1.4), M["fence"], 0, "slats"))
                else:
                    fronts.append((z0, z1, rng.uniform(0.8, 2.2), M["wall"], 0, None))
        _draw_plane(c, sign, side["walk_out"] + 0.05, fronts, 0.85 if sign < 0 else 1.0)

        for _ in range(_poisson(rng, st.garden_trees / 2)):
            if side["garden"] > 1.0:
                x = sign * (side["walk_out"] + rng.uniform(0.8, side["garden"]))
                c.billboard(x, rng.uniform(4, 70), 6.0, 12.0,
                            _tree(rng.uniform(1.5, 3.0), rng.uniform(1.2, 2.6), rng.uniform(1.5, 3.2),
                                  rng.uniform(0, 6.3, 2)), shape.get("tree", one))
        for _ in range(_poisson(rng, st.street_trees / 2)):
            x = sign * (road_half + (side["verge"] / 2 if side["verge"] > 0.6 else side["verge"] + 0.6))
            c.billboard(x, rng.uniform(4, 70), 5.0, 10.0,
                        _tree(rng.uniform(1.8, 3.0), rng.uniform(1.0, 2.0), rng.uniform(1.3, 2.4),
                              rng.uniform(0, 6.3, 2)), shape.get("tree", one))
        z = rng.uniform(3, st.pole_gap[1])
        while z < 90:
            if rng.random() < st.pole_p:
                top = rng.choice(["none", "sign", "light"], p=[0.4, 0.35, 0.25])
                c.billboard(sign * (road_half + side["verge"] + 0.3), z, 1.0, 8.0,
                            _pole(rng.uniform(3.5, 6.5), top), shape.get("pole", one))
            z += rng.uniform(*st.pole_gap)
        for _ in range(_poisson(rng, st.persons / 2)):
            walk_in, walk_out = road_half + side["verge"], side["walk_out"]
            c.billboard(sign * rng.uniform(walk_in + 0.3, max(walk_in + 0.4, walk_out - 0.3)), rng.uniform(3, 45),
                        0.8, 2.2, _person(int(rng.integers(N_VARIANTS)), rng.uniform(0.9, 1.1)),
                        shape.get("person", one))
        for _ in range(_poisson(rng, st.parked / 2)):
            c.billboard(sign * (road_half - 1.1), rng.uniform(4, 60), 2.0, 1.6, _car("car", int(rng.integers(N_VARIANTS))),
                        shape.get("car", one))

    for _ in range(_poisson(rng, st.cars)):
        kind = "car" if rng.random() >= st.heavy_p else rng.choice(["truck", "bus"])
        x = rng.uniform(-road_half + 1.3, road_half - 1.3)
        c.billboard(x, rng.uniform(5, 80), 2.6, 3.3, _car(kind, int(rng.integers(N_VARIANTS))),
                    shape.get("car" if kind == "car" else "heavy", one))
    for _ in range(_poisson(rng, st.cyclists)):
        x = rng.choice([-1, 1]) * rng.uniform(road_half - 1.2, road_half - 0.4)
        c.billboard(x, rng.uniform(4, 40), 1.6, 1.9, _cyclist(int(rng.integers(N_VARIANTS))),
                    shape.get("cyclist", one))
    return c


def _sky_gradient(c: _Canvas) -> np.ndarray:
    """1 at the top, brighter towards the horizon."""
    t = np.clip(c.ys / max(c.vy, 1.0), 0, 1)
    return (1.0 + 0.25 * t)[..., None]


def render_synthetic(c: _Canvas, look: Look | None = None) -> np.ndarray:
    """Flat, game-like colours with flat per-surface shading (and cel-shading outlines if the look has them)."""
    look = look or LOOKS["street"]
    palette = look.synthetic_palette
    image = palette[c.mat, c.var] * c.shade[..., None]
    sky = (c.mat == M["sky"])[..., None]
    image = np.where(sky, np.minimum(palette[M["sky"], 0] * _sky_gradient(c), 255), image)
    if look.outlines:  # dark lines where the material changes, as toon renderers draw them
        ids = c.mat.astype(np.int16) * N_VARIANTS + c.var
        edge = np.zeros(ids.shape, bool)
        edge[1:] |= ids[1:] != ids[:-1]
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        image = np.where(edge[..., None], image * 0.35, image)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _smooth_noise(rng, height: int, width: int, cell: int) -> np.ndarray:
    small = rng.normal(0, 1, (height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def render_real(c: _Canvas, rng: np.random.Generator, look: Look | None = None) -> np.ndarray:
    """Textured, duller, colour-shifted colours under varying light, blurred and noisy."""
    look = look or LOOKS["street"]
    h, w = c.h, c.w
    base = look.real_palette[c.mat, c.var] * (0.85 + 0.15 * c.shade[..., None])
    fine = rng.normal(0, 1, (h, w)).astype(np.float32)
    mid = _smooth_noise(rng, h, w, 3)
    low = _smooth_noise(rng, h, w, 12)
    amp = look.texture[c.mat]  # H x W x 3: fine, mid, low
    texture = 1 + amp[..., 0] * fine + amp[..., 1] * mid + amp[..., 2] * low
    image = base * texture[..., None]
    sky = c.mat == M["sky"]
    clouds = np.clip(_smooth_noise(rng, h, w, 10) * 0.6 + rng.uniform(-0.4, 0.5), 0, 1)
    image[sky] = (image[sky] * (1 - 0.6 * clouds[sky, None]) + 238 * 0.6 * clouds[sky, None])
    # Light: exposure, white balance, a sideways illumination gradient and vignetting.
    gain = rng.uniform(*look.gain)
    balance = rng.uniform(*look.balance, 3).astype(np.float32) * np.asarray(look.tint, np.float32)
    slope = rng.uniform(-0.3, 0.3)
    xn, yn = c.xs / w - 0.5, c.ys / h - 0.5
    light = gain * (1 + slope * xn) * (1 - look.vignette * (xn ** 2 + yn ** 2))
    image = image * light[..., None] * balance
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(*look.blur))
    image += rng.normal(0, rng.uniform(*look.noise), image.shape).astype(np.float32)
    if look.sensor:
        image = _sensor_artefacts(image, rng)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _sensor_artefacts(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap camera: lateral chromatic aberration, chroma noise, row banding and JPEG blocks."""
    shift = int(rng.integers(1, 3))
    image[..., 0] = np.roll(image[..., 0], shift, axis=1)
    image[..., 2] = np.roll(image[..., 2], -shift, axis=1)
    image += _smooth_noise(rng, image.shape[0], image.shape[1], 4)[..., None] * rng.uniform(1, 4) * \
        rng.choice([-1.0, 1.0], 3).astype(np.float32)
    image += rng.normal(0, 2.0, (image.shape[0], 1, 1)).astype(np.float32)
    quality = int(rng.integers(40, 75))
    ok, buf = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8)[..., ::-1],
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) if ok else image


def render_sample(seed: int, domain: str, index: int, size: tuple[int, int],
                  style: str = "street") -> tuple[np.ndarray, np.ndarray]:
    """One (image HxWx3 uint8, label HxW uint8 trainIds) of a domain; a pure function of its arguments."""
    look = LOOKS[style]
    domain_code = DOMAINS.index(domain)
    key = [int(seed), domain_code, int(index), GENERATOR_VERSION] + ([STYLES.index(style)] if style != "street" else [])
    rng = np.random.default_rng(key)
    urban = rng.random() < look.urban_share[domain]
    canvas = render_scene(rng, size[0], size[1], urban, look)
    label = MATERIAL_TRAIN_ID[canvas.mat]
    image = render_synthetic(canvas, look) if domain == "synthetic" else render_real(canvas, rng, look)
    return image, label


# --------------------------------------------------------------------------------------------------
# Writing the world


def _generate_one(args) -> tuple[str, int, np.ndarray]:
    seed, domain, index, size, folder, style = args
    image, label = render_sample(seed, domain, index, size, style)
    name = f"{index:05d}.png"
    (folder / "images" / name).write_bytes(io.encode_png(image))
    (folder / "labels" / name).write_bytes(io.encode_png(label))
    return domain, index, np.bincount(label.ravel(), minlength=256)


def parse_size(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256)."""
    try:
        h, w = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise S2RError(f"invalid size {text!r}", hint="write HxW, e.g. 128x256") from None
    if h < 32 or w < 32 or h > 4096 or w > 4096:
        raise S2RError(f"size {h}x{w} is out of range", hint="use between 32 and 4096 pixels per side")
    return h, w


_STAGING_PREFIX = ".demo-staging-"
_DEMO_FILE = re.compile(r"\d{5}\.png")


def _is_demo_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "s2r-demo-world"


def _not_from_demo(out: Path) -> list[Path]:
    """What ``--overwrite`` would have to delete in ``out`` that a demo world did not write: a
    ``manifest.json`` of another kind, or anything in ``synthetic/``, ``real/``, ``real_val/`` other
    than their ``images/`` and ``labels/`` folders of ``NNNNN.png`` files."""
    foreign = []
    manifest = out / "manifest.json"
    if (manifest.exists() or manifest.is_symlink()) and not (manifest.is_file() and _is_demo_manifest(manifest)):
        foreign.append(manifest)
    for domain in DOMAINS:
        folder = out / domain
        if not (folder.exists() or folder.is_symlink()):
            continue
        if folder.is_symlink() or not folder.is_dir():
            foreign.append(folder)
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name not in ("images", "labels") or entry.is_symlink() or not entry.is_dir():
                foreign.append(entry)
                continue
            foreign += [f for f in sorted(entry.iterdir())
                        if f.is_symlink() or not f.is_file() or not _DEMO_FILE.fullmatch(f.name)]
    return foreign


def check_demo_out(out: str | Path, overwrite: bool) -> None:
    """Refuse an ``--out`` the demo world must not write into.

    Without ``overwrite``: a folder that is not empty (a demo world already there, or anything
    else). With it: the demo world goes beside what the folder holds, replacing only its own
    ``manifest.json``, ``synthetic/``, ``real/`` and ``real_val/``; if replacing them would delete
    a file the demo world did not write, that is refused too, naming the file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise S2RError(f"--out {out} is a file, not a folder", hint="choose a new or empty folder")
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(_STAGING_PREFIX))
    if not entries:
        return
    is_world = _is_demo_manifest(out / "manifest.json")
    if not overwrite:
        if is_world:
            raise S2RError(f"a demo world already exists in {out}", hint="choose another --out, or pass --overwrite")
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise S2RError(f"--out {out} is not empty and holds no s2r demo world ({len(entries)} entries: {shown})",
                       hint="choose a new or empty folder, or pass --overwrite to write the demo world beside "
                            "what is there (only manifest.json, synthetic/, real/ and real_val/ are replaced)")
    foreign = _not_from_demo(out)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise S2RError(f"--overwrite would delete {foreign[0]}{more}, which no demo world wrote",
                       hint="move it out of the way, or choose another --out")


def write_demo_world(out: str | Path, *, n_synthetic: int = 400, n_real: int = 200, n_real_val: int = 100,
                     size: tuple[int, int] = (128, 256), seed: int = 0, overwrite: bool = False,
                     workers: int | None = None, progress=None, style: str = "street") -> dict:
    """Write the demo world to ``out`` and return its manifest.

    ``out`` must be new or empty; with ``overwrite`` it may hold an earlier demo world or other
    files: only ``manifest.json``, ``synthetic/``, ``real/`` and ``real_val/`` are replaced, and
    only if they hold nothing but demo output (see :func:`check_demo_out`).
    ``style`` picks the world's look: ``street`` (the default) or ``dusk``, a differently
    rendered world to validate on (see ``LOOKS``).
    Files go to a hidden staging folder first and are moved into place at the end, so an
    interrupted run leaves no half-written world; ``manifest.json`` is written last.
    """
    out = Path(out)
    if style not in LOOKS:
        raise S2RError(f"unknown demo world style {style!r}", hint="valid: " + ", ".join(STYLES))
    counts = {"synthetic": int(n_synthetic), "real": int(n_real), "real_val": int(n_real_val)}
    if any(n < 0 for n in counts.values()) or counts["synthetic"] < 1 or counts["real"] < 1:
        raise S2RError("the demo world needs at least one synthetic and one real image")
    size = (int(size[0]), int(size[1]))
    check_demo_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    start = time.perf_counter()
    try:
        jobs = []
        for domain in DOMAINS:
            for sub in ("images", "labels"):
                (staging / domain / sub).mkdir(parents=True)
            jobs += [(seed, domain, i, size, staging / domain, style) for i in range(counts[domain])]
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        pixels = {d: np.zeros(256, np.int64) for d in DOMAINS}
        if workers > 1 and len(jobs) >= 64:
            with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
                results = pool.imap_unordered(_generate_one, jobs, chunksize=8)
                for domain, _index, counts_ in (progress(results, len(jobs)) if progress else results):
                    pixels[domain] += counts_
        else:
            results = map(_generate_one, jobs)
            for domain, _index, counts_ in (progress(results, len(jobs)) if progress else results):
                pixels[domain] += counts_
        space = get_label_space("cityscapes19")
        manifest = {
            "format": "s2r-demo-world", "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "size": list(size), "counts": counts, "space": space.name, "style": style,
            "urban_share": {d: LOOKS[style].urban_share[d] for d in DOMAINS},
            "class_frequencies": {d: _frequencies(pixels[d], space) for d in DOMAINS},
        }
        foreign = _not_from_demo(out)  # checked again: the folder may have changed while rendering
        if foreign:
            raise S2RError(f"{foreign[0]} appeared in {out} while the demo world was written; nothing was replaced",
                           hint="move it out of the way and run again")
        for domain in DOMAINS:
            if (out / domain).exists():
                shutil.rmtree(out / domain)
            os.replace(staging / domain, out / domain)
        atomic_write_json(out / "manifest.json", manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["seconds"] = round(time.perf_counter() - start, 2)
    return manifest


def _frequencies(counts: np.ndarray, space) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {name: round(float(counts[k]) / total, 6) for k, name in enumerate(space.class_names)}


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise S2RError(f"{root} is not a demo world (no manifest.json)", hint=f"run `s2r prepare demo --out {root}`")
    return json.loads(path.read_text())


def samples_figure(root: str | Path, out_path: str | Path, *, n: int = 4, domains=("synthetic", "real"),
                   alpha: float = 0.45) -> Path:
    """Save a grid: per domain, a row of images and a row of the same images with label overlays.

    Works on any demo world (``s2r prepare demo``); used for docs/img/demo_samples.png.
    """

    rows, titles = [], []
    for domain in domains:
        ds = open_dataset(f"demo:{root}?split={domain}")
        pick = range(min(n, len(ds)))
        images = [ds.read_image(i) for i in pick]
        labels = [ds.read_label(i) for i in pick]
        rows.append(images)
        rows.append([overlay(im, lab, "cityscapes19", alpha) for im, lab in zip(images, labels)])
        titles += [f"{domain}", f"{domain} + labels"]
    h, w = rows[0][0].shape[:2]
    pad, text_h = 4, 14
    grid = np.full(((h + text_h + pad) * len(rows) + pad, (w + pad) * n + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        top = r * (h + text_h + pad) + pad + text_h
        for k, tile in enumerate(row):
            grid[top:top + h, pad + k * (w + pad): pad + k * (w + pad) + w] = tile
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for r, title in enumerate(titles):
        draw.text((pad, r * (h + text_h + pad) + pad), title, fill=(0, 0, 0))
    return atomic_save_image(canvas, out_path)
