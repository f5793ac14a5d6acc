"""``s2r models``: the model registry as a table."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ..console import stdout
from ..models import count_parameters, get_model_entry, list_models


def model_rows() -> list[dict]:
    rows = []
    for name in list_models():
        entry = get_model_entry(name)
        params = {}
        for preset in sorted(entry.presets):
            params[preset] = count_parameters(entry.factory(**entry.model_kwargs(preset)))
        rows.append({"name": name, "kind": entry.kind, "input": entry.input_kind, "presets": sorted(entry.presets),
                     "parameters": params, "description": entry.description})
    return rows


def describe_checkpoint(path: str) -> dict:
    """The inference-relevant facts of a checkpoint (no weights)."""
    from ..checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return {k: ckpt.get(k) for k in ("model", "model_kwargs", "label_space", "step", "format_version", "s2r_version")} | {
        "networks": sorted(ckpt["state_dicts"]),
    }


def models(
    name: str = typer.Argument(None, help="Show one model's presets in full."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Describe a checkpoint file instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registered models: name, kind, input, presets and parameter counts."""
    if checkpoint is not None:
        stdout.print_json(json.dumps(describe_checkpoint(checkpoint), default=str))
        return
    if name is not None:
        entry = get_model_entry(name)
        stdout.print_json(json.dumps({"name": entry.name, "kind": entry.kind, "input": entry.input_kind,
                                      "description": entry.description, "presets": entry.presets}, default=str))
        return
    rows = model_rows()
    if as_json:
        stdout.print_json(json.dumps(rows))
        return
    table = Table(title="s2r models")
    for column in ("name", "kind", "input", "presets", "parameters", "description"):
        table.add_column(column)
    for r in rows:
        params = ", ".join(f"{k}: {v / 1e6:.2f}M" for k, v in r["parameters"].items()) or "-"
        table.add_row(r["name"], r["kind"], r["input"], ", ".join(r["presets"]) or "-", params, r["description"])
    if not rows:
        table.caption = "no models registered yet"
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("models", epilog="Example: s2r models unit   |   s2r models --checkpoint runs/unit/checkpoints/latest.pt")(models)
