"""``s2r models``: the model registry as a table."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.table import Table

from ..checkpoint import load_checkpoint
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

    ckpt = load_checkpoint(path)
    return {k: ckpt.get(k) for k in ("model", "model_kwargs", "label_space", "step", "format_version", "s2r_version")} | {
        "networks": sorted(ckpt["state_dicts"]),
    }


def models(
    name: str = typer.Argument(None, help="Show one model's presets in full."),
    checkpoint: str = typer.Option(None, "--checkpoint", metavar="CKPT", help="Describe a checkpoint file instead."),
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
    stdout.print(models_table(rows, width=stdout.width))


NARROW = 70
"""Below this many columns the description is left out (``s2r models NAME`` shows it)."""


def models_table(rows: list[dict], width: int | None = None) -> Table:
    """The registry as a table that stays readable at 80 columns.

    Each preset's parameter count sits on its own line ("tiny: 0.92M") and is never
    broken; the description takes the remaining width and wraps at word boundaries.
    On a terminal narrower than ``NARROW`` columns the description is left out.
    """
    with_description = width is None or width >= NARROW
    table = Table(title="s2r models", box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False, collapse_padding=True,
                  caption="s2r models NAME shows one model in full" if rows else "no models registered yet")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("kind", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("presets: parameters", no_wrap=True)
    if with_description:
        table.add_column("description", ratio=1)
    for r in rows:
        params = "\n".join(f"{k}: {v / 1e6:.2f}M" for k, v in r["parameters"].items()) or ", ".join(r["presets"]) or "-"
        cells = [r["name"], r["kind"], r["input"], params] + ([r["description"] or ""] if with_description else [])
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    app.command("models", epilog="Example: s2r models unit (or: s2r models --checkpoint runs/unit/checkpoints/latest.pt)")(models)
