"""``s2r translate``: run a trained checkpoint over images or label maps."""

from __future__ import annotations

import typer

from ..errors import NotYetAvailable


def translate(checkpoint: str = typer.Option(..., "--checkpoint", help="An s2r checkpoint."),
              input: str = typer.Option(..., "--input", help="Folder or dataset spec."),
              output: str = typer.Option(..., "--output", help="Output folder.")) -> None:
    """Translate synthetic images (or generate from label maps) with a trained model."""
    raise NotYetAvailable("`s2r translate` is not available yet: it arrives with the first translation model")


def register(app: typer.Typer) -> None:
    app.command("translate", epilog="Example: s2r translate --checkpoint runs/unit/checkpoints/latest.pt "
                "--input demo/synthetic/images --output translated/")(translate)
