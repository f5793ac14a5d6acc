"""The one parser for ``--size HxW`` options, and how much memory a size may take."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from ..errors import S2RError


def parse_size(text: str | Iterable[int] | None, default: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """``"256x512"`` (also ``"256,512"`` or ``[256, 512]``) -> ``(256, 512)``, height first.

    ``None`` or ``""`` gives ``default``. Anything else that is not two positive
    integers is an :class:`S2RError`.
    """
    if text is None or text == "":
        return default
    if isinstance(text, str):
        parts = text.strip().lower().replace(",", "x").split("x")
    else:
        parts = list(text)
    try:
        values = [int(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2 or min(values) < 1:
        raise S2RError(f"bad size {text!r}", hint="write it as HxW, e.g. 256x512")
    return values[0], values[1]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units up to PiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Memory left under this process's cgroup limit (v2, else v1), or None without a limit."""
    for limit_file, usage_file in ((Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
                                   (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                                    Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"))):
        limit = _read_int(limit_file)
        if limit is not None and limit < 2**60:  # v1 writes a huge number for "no limit"
            return max(0, limit - (_read_int(usage_file) or 0))
    return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """Bytes a run on ``device`` can still allocate, and where they are, in words.

    CUDA: the free memory of the device (``torch.cuda.mem_get_info``). CPU: the smallest of the
    physical memory (``SC_PHYS_PAGES * SC_PAGE_SIZE``), the kernel's ``MemAvailable`` and the room
    left under a cgroup (container) limit. ``None`` when nothing can be found out.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None, f"{device} memory"
        return int(free), f"free memory on {device}"
    found = []
    try:
        found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    for value in (_meminfo_available(), _cgroup_room()):
        if value is not None:
            found.append(value)
    return (min(found) if found else None), "available memory (RAM)"
