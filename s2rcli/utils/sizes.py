"""The one parser for ``--size HxW`` options."""

from __future__ import annotations

from typing import Iterable

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
