"""``s2r prepare``: label remapping, the demo world, SP-Feat and KNN pairs."""

from __future__ import annotations

import typer

from . import prepare_data, prepare_features

prepare_app = typer.Typer(
    no_args_is_help=True,
    help="Prepare data: remap labels, write the demo world, compute SP-Feat, pair images.",
)


def register(app: typer.Typer) -> None:
    prepare_data.register(prepare_app)
    prepare_features.register(prepare_app)
    app.add_typer(prepare_app, name="prepare", epilog="Example: s2r prepare demo --out demo")
