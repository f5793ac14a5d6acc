"""``s2r fid A B``: FID and KID between two image sets."""

from __future__ import annotations

import typer

from ..errors import NotYetAvailable


def fid(a: str = typer.Argument(..., help="Folder or dataset spec."),
        b: str = typer.Argument(..., help="Folder or dataset spec.")) -> None:
    """Compute FID (and KID) between two image sets with a fixed, documented resize."""
    raise NotYetAvailable("`s2r fid` is not available yet: it arrives with the evaluation tools")


def register(app: typer.Typer) -> None:
    app.command("fid", epilog="Example: s2r fid translated/ demo:demo?split=real --kid")(fid)
