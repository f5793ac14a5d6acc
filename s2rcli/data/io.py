"""Decoding images and label files, with one-line errors that name the file.

Label decoders return the *raw* values stored in the file (uint8 or uint16 HxW); mapping them
into a label space is the job of :class:`s2rcli.data.labels.RawTable`.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image

from ..errors import S2RError
from ..utils.atomic import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the 12-byte IEND chunk that closes every PNG
_TAIL = 4096  # bytes searched for it (a few tools append data after IEND)


def _unreadable(path: Path, exc: BaseException | str, what: str) -> S2RError:
    reason = exc if isinstance(exc, str) else (" ".join(str(exc).split()) or type(exc).__name__)
    return S2RError(f"cannot read {what} {path}: {reason}",
                    hint="the file may be truncated or corrupt; re-extract it, or pass --on-error skip "
                         "(?on_error=skip in a spec) to leave such files out")


def _png_is_complete(path: Path) -> bool:
    """Whether a PNG file still ends with its IEND chunk. Pillow decodes a PNG that lost only its
    last bytes without complaint, so a file cut short there would otherwise pass as whole."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - _TAIL))
        return _PNG_END in fh.read()


def _open(path: Path, what: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(path)
            image.load()  # decode now, so a truncated file fails here, not later
        if image.format == "PNG" and not _png_is_complete(path):
            raise _unreadable(path, "truncated PNG file (no IEND chunk at its end)", what)
        return image
    except FileNotFoundError:
        raise S2RError(f"{what} not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc, what) from None


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array (grey, palette and RGBA images are converted)."""
    path = Path(path)
    image = _open(path, "image")
    if image.mode in ("I;16", "I;16B", "I", "F"):
        raise _unreadable(path, f"mode {image.mode} is not an 8-bit photo", "image")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise S2RError(f"file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc, "file") from None
    return height, width


def verify_image(path: str | Path) -> tuple[int, int]:
    """Check that an image file decodes to its end (not truncated, not corrupt); returns (height, width).

    Much cheaper than decoding, so bulk commands can afford it: a PNG's chunks and CRCs are
    verified without inflating the pixels; a JPEG is decoded at 1/8 scale, which still reads its
    whole entropy stream (Pillow's ``verify()`` does not notice a truncated JPEG); any other format
    is decoded in full.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if image.format == "PNG":
                    image.verify()
                else:
                    if image.format == "JPEG":
                        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    image.load()
    except FileNotFoundError:
        raise S2RError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc, "image") from None
    return height, width


def files_fingerprint(entries: Iterable[tuple[str, Iterable[str | Path | None]]], *, mtime: bool = False) -> str:
    """A digest of which files a result was computed from: per name, each file's size in bytes
    (and, with ``mtime``, its modification time in ns), in name order.

    Names that match but files that differ give another digest, so a result made from other data
    is told apart without reading a pixel. Missing files count as absent.
    """
    digest = hashlib.sha256()
    for name, paths in sorted(entries, key=lambda entry: entry[0]):
        fields = [name]
        for path in paths:
            if path is None:
                fields.append("-")
                continue
            try:
                st = os.stat(path)
            except OSError:
                fields.append("missing")
                continue
            fields.append(f"{st.st_size}:{st.st_mtime_ns}" if mtime else str(st.st_size))
        digest.update(("\t".join(fields) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def dataset_fingerprint(dataset, names: Iterable[str] | None = None, *, labels: bool = False,
                        mtime: bool = False) -> str:
    """:func:`files_fingerprint` of a dataset's image files (and label files with ``labels``), for the
    samples whose name is in ``names`` (all by default). ``""`` for a dataset that does not expose its
    files (``samples`` with ``image`` / ``label`` paths): such data cannot be checked."""
    samples = getattr(dataset, "samples", None)
    if not samples or not all(hasattr(s, "image") and hasattr(s, "name") for s in samples):
        return ""
    keep = None if names is None else {str(n) for n in names}
    entries = [(s.name, [s.image] + ([getattr(s, "label", None)] if labels else []))
               for s in samples if keep is None or s.name in keep]
    return files_fingerprint(entries, mtime=mtime)


class _ArrowArray(ctypes.Structure):
    """``struct ArrowArray`` of the Arrow C data interface (a stable ABI)."""

    _fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
                ("buffers", ctypes.POINTER(ctypes.c_void_p)), ("children", ctypes.c_void_p),
                ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _pixels_8bit(image: Image.Image) -> np.ndarray:
    """The pixels of a decoded 8-bit single-channel image (L or P) as a read-only HxW uint8 array.

    ``np.asarray(image)`` copies the pixels out of Pillow (through ``tobytes``); Pillow >= 11.2 also
    exports them without a copy through the Arrow C data interface, which this reads: the array
    keeps Pillow's memory alive. A label is then copied once, by the lookup that maps it
    (about 10% of a GTA5 label's decode time saved). Where the export is unavailable (older Pillow,
    an image in several memory blocks), ``np.asarray``.
    """
    width, height = image.size
    try:
        schema, array = image.__arrow_c_array__()
        fmt = ctypes.cast(_capsule_pointer(schema, b"arrow_schema"), ctypes.POINTER(ctypes.c_char_p))[0]
        arrow = _ArrowArray.from_address(_capsule_pointer(array, b"arrow_array"))
        if (fmt != b"C" or arrow.n_buffers != 2 or arrow.offset != 0 or arrow.null_count not in (0, -1)
                or arrow.length != width * height or not arrow.buffers[1]):
            raise ValueError("not a flat uint8 export")
        buffer = (ctypes.c_uint8 * arrow.length).from_address(arrow.buffers[1])
        buffer._owner = (schema, array)  # the capsules release Pillow's memory when the array goes
        pixels = np.frombuffer(buffer, np.uint8).reshape(height, width)
    except (AttributeError, TypeError, ValueError, OSError):
        return np.asarray(image)
    pixels.flags.writeable = False
    return pixels


def read_index_label(path: str | Path) -> np.ndarray:
    """A single-channel label PNG (grey or palette) as its stored values, HxW uint8 (uint16 if 16-bit).

    For palette PNGs (GTA5, Mapillary) the stored value is the palette index, which is the class id.
    The array may be read-only (copy it to change it).
    """
    path = Path(path)
    image = _open(path, "label")
    if image.mode in ("L", "P"):
        return _pixels_8bit(image)
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.uint16)
    if image.mode == "I":
        array = np.asarray(image)
        if array.min() < 0 or array.max() > 65535:
            raise _unreadable(path, "label values do not fit 16 bits", "label")
        return array.astype(np.uint16)
    raise S2RError(f"label {path} is a {image.mode} image, not a single-channel id map",
                   hint="point the spec at the id labels (e.g. *_gtFine_labelIds.png, not *_color.png)")


def read_first_channel_16bit(path: str | Path) -> np.ndarray:
    """SYNTHIA's labels: 16-bit, 3-channel PNGs with the class id in the first (red) channel.

    Pillow opens these as 8-bit RGB with silently wrong values, so they are decoded with OpenCV.
    """
    path = Path(path)
    if not path.is_file():
        raise S2RError(f"label not found: {path}")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise _unreadable(path, "OpenCV could not decode it", "label")
    if array.ndim == 3:
        array = array[:, :, 2] if array.shape[2] >= 3 else array[:, :, 0]  # OpenCV gives BGR(A): red is index 2
    return np.ascontiguousarray(array)


def read_red_channel(path: str | Path) -> np.ndarray:
    """CARLA's raw semantic camera output: the tag is the red channel."""
    path = Path(path)
    image = _open(path, "label")
    if image.mode in ("L", "P"):  # a single channel that already holds the tag
        return np.asarray(image) if image.mode == "L" else np.asarray(image.convert("RGB"))[:, :, 0]
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image)[:, :, 0])


def read_rgb_label(path: str | Path) -> np.ndarray:
    """A colour-coded label image as HxWx3 uint8 (decoded to ids with :func:`colors_to_ids`)."""
    path = Path(path)
    image = _open(path, "label")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW int32 with value r<<16 | g<<8 | b."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colors_to_ids(rgb: np.ndarray, colors: dict[tuple[int, int, int], int], unknown: int) -> np.ndarray:
    """Map each pixel's colour to an id through ``colors``; colours not listed become ``unknown``.

    Returns uint16 so ``unknown`` may lie above every id.
    """
    keys = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in colors), np.int32)
    values = np.array([colors[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in keys], np.uint16)
    packed = pack_rgb(rgb)
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    return np.where(keys[pos] == packed, values[pos], np.uint16(unknown)).astype(np.uint16)


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of an HxW (grey) or HxWx3 (RGB) uint8 array; deterministic for equal input."""

    buffer = io.BytesIO()  # Pillow infers mode L from HxW uint8 and RGB from HxWx3 uint8
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(array: np.ndarray, path: str | Path, *, overwrite: bool = True, compress_level: int = 1) -> Path:
    """Write an HxW uint8 label map (8-bit grey PNG) or HxWx3 RGB image, atomically."""
    return atomic_write_bytes(path, encode_png(array, compress_level), overwrite=overwrite)


def read_npz(path: str | Path, required: tuple[str, ...], what: str, hint: str, *,
             article: str = "a") -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` written by s2r (no pickles), checked for the ``required`` keys.

    A missing, truncated or foreign file is an :class:`S2RError` naming ``what`` it should be.
    """
    path = Path(path)
    if not path.exists():
        raise S2RError(f"{what} not found: {path}", hint=hint)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in required if key not in data.files]
            if missing:
                raise S2RError(f"{path} is not {article} {what} (missing {', '.join(missing)})", hint=hint)
            return {key: data[key] for key in data.files}
    except S2RError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise S2RError(f"cannot read {what} {path}: {exc}", hint="the file may be truncated; " + hint) from exc
