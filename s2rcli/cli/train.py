"""``s2r train MODEL``: train a registered translation model."""

from __future__ import annotations

import typer

from ..errors import NotYetAvailable


def train(model: str = typer.Argument(..., help="Registered model name (see `s2r models`)."),
          out: str = typer.Option(..., "--out", help="Run folder.")) -> None:
    """Train a registered translation model on synthetic and real data."""
    raise NotYetAvailable("`s2r train` is not available yet: it arrives with the training engine")


def register(app: typer.Typer) -> None:
    app.command("train", epilog="Example: s2r train unit --synthetic demo:demo?split=synthetic "
                "--real demo:demo?split=real --out runs/unit --smart-batch --pairs pairs.npz")(train)
