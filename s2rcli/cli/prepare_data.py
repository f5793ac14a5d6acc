"""``s2r prepare remap`` and ``s2r prepare demo``."""

from __future__ import annotations

import typer

from ..console import info, stdout
from ..errors import NotYetAvailable


def remap(spec: str = typer.Argument(..., help="Dataset spec KIND:PATH[?split=...]."),
          out: str = typer.Option(..., "--out", help="Output folder.")) -> None:
    """Materialise labels in the common label space."""
    raise NotYetAvailable("`s2r prepare remap` is not available yet: it arrives with the data layer")


def demo(
    out: str = typer.Option(..., "--out", help="Output folder for the demo world."),
    n_synthetic: int = typer.Option(400, "--n-synthetic", min=1, help="Synthetic images (with labels)."),
    n_real: int = typer.Option(200, "--n-real", min=1, help="Real training images (labels for SP-Feat/oracle/eval only)."),
    n_real_val: int = typer.Option(100, "--n-real-val", min=0, help="Real validation images (with labels)."),
    size: str = typer.Option("128x256", "--size", help="Image size HxW."),
    seed: int = typer.Option(0, "--seed", help="Same seed, byte-identical files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a demo world already in --out."),
) -> None:
    """Write the procedural demo world: a synthetic and a real street-scene domain.

    Synthetic images are flat game-like renderings of mostly built-up streets; real images are
    textured, noisy, colour-shifted "photos" of mostly green suburbs. Labels are cityscapes19
    trainIds. Read them back with the specs demo:OUT?split=synthetic|real|real_val.
    """
    from ..data.demo import parse_size, write_demo_world
    from ..training.progress import track

    manifest = write_demo_world(out, n_synthetic=n_synthetic, n_real=n_real, n_real_val=n_real_val,
                                size=parse_size(size), seed=seed, overwrite=overwrite,
                                progress=lambda it, total: track(it, total, "demo world"))
    info(f"wrote the demo world to {out} in {manifest['seconds']:.1f} s")
    from rich.table import Table

    table = Table(title=f"demo world {out} (seed {seed}, {size})")
    table.add_column("class")
    for domain in manifest["counts"]:
        table.add_column(f"{domain} ({manifest['counts'][domain]})", justify="right")
    freqs = manifest["class_frequencies"]
    for name in freqs["synthetic"]:
        table.add_row(name, *(f"{100 * freqs[d][name]:.1f}%" for d in manifest["counts"]))
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("remap", epilog="Example: s2r prepare remap gta5:/data/gta5 --out gta5_cs19")(remap)
    app.command("demo", epilog="Example: s2r prepare demo --out demo --n-synthetic 400 --n-real 200")(demo)
