"""``s2r prepare spfeat`` and ``s2r prepare pairs``."""

from __future__ import annotations

import typer

from ..errors import NotYetAvailable


def spfeat(spec: str = typer.Argument(..., help="Dataset spec KIND:PATH[?split=...]."),
           out: str = typer.Option(..., "--out", help="Output .npz file.")) -> None:
    """Compute Spatial Pyramid Features (per-slice class histograms) for every label map."""
    raise NotYetAvailable("`s2r prepare spfeat` is not available yet: it arrives with the smart batch loader")


def pairs(out: str = typer.Option(..., "--out", help="Output pairs .npz file.")) -> None:
    """Pair each real image with its K nearest synthetic images by SP-Feat."""
    raise NotYetAvailable("`s2r prepare pairs` is not available yet: it arrives with the smart batch loader")


def register(app: typer.Typer) -> None:
    app.command("spfeat", epilog="Example: s2r prepare spfeat demo:demo?split=real --out real.npz")(spfeat)
    app.command("pairs", epilog="Example: s2r prepare pairs --real real.npz --synthetic syn.npz -k 15 --out pairs.npz")(pairs)
