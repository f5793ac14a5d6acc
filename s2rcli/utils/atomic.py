"""Atomic file writes: write a temp file beside the target, fsync, then rename.

A crash at any point leaves either the old file or the new one, never a torn
mix, because ``os.replace`` within one folder is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ..errors import S2RError


def refuse_overwrite(path: Path, overwrite: bool, what: str = "file") -> None:
    """Raise unless ``path`` is free or the user asked to overwrite it."""
    if path.exists() and not overwrite:
        raise S2RError(
            f"{what} already exists: {path}",
            hint="choose another path, or pass --overwrite to replace it",
        )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets us open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path to write; on success it is renamed onto ``path``.

    The temp file is removed if the body raises, so nothing half-written stays.
    """
    path = Path(path)
    refuse_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj, *, overwrite: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", overwrite=overwrite)


def atomic_write_with(
    path: str | os.PathLike, writer: Callable[[io.BufferedWriter], None], *, overwrite: bool = True
) -> Path:
    """Call ``writer(fileobj)`` on a temp file and rename it onto ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            writer(fh)
    return Path(path)


def atomic_save_image(image, path: str | os.PathLike, *, overwrite: bool = True, **save_kwargs) -> Path:
    """Save a PIL image atomically; the format comes from the target's suffix."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lstrip(".").upper() or "PNG")
    return atomic_write_with(path, lambda fh: image.save(fh, format=fmt, **save_kwargs), overwrite=overwrite)
