"""``s2r prepare remap`` and ``s2r prepare demo``."""

from __future__ import annotations

import typer

from ..errors import NotYetAvailable


def remap(spec: str = typer.Argument(..., help="Dataset spec KIND:PATH[?split=...]."),
          out: str = typer.Option(..., "--out", help="Output folder.")) -> None:
    """Materialise labels in the common label space."""
    raise NotYetAvailable("`s2r prepare remap` is not available yet: it arrives with the data layer")


def demo(out: str = typer.Option(..., "--out", help="Output folder.")) -> None:
    """Write the procedural demo world (synthetic and real domains)."""
    raise NotYetAvailable("`s2r prepare demo` is not available yet: it arrives with the data layer")


def register(app: typer.Typer) -> None:
    app.command("remap", epilog="Example: s2r prepare remap gta5:/data/gta5 --out gta5_cs19")(remap)
    app.command("demo", epilog="Example: s2r prepare demo --out demo")(demo)
