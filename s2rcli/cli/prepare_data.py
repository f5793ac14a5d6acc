"""``s2r prepare remap`` and ``s2r prepare demo``."""

from __future__ import annotations

import typer
from rich.table import Table

from ..console import info, stdout, track, warn
from ..data.demo import STYLES, parse_size, write_demo_world
from ..data.labels import list_label_spaces
from ..data.remap import remap_dataset
from ..errors import S2RError


def remap(
    spec: str = typer.Argument(..., help="Dataset spec KIND:PATH[?split=...&on_error=...], e.g. gta5:/data/gta5."),
    out: str = typer.Option(..., "--out", metavar="PATH", help="Output folder: labels/, images/ (links) and manifest.json."),
    space: str = typer.Option("cityscapes19", "--space", metavar="NAME", help="Label space: " + ", ".join(list_label_spaces()) + "."),
    workers: int = typer.Option(None, "--workers", min=1, help="Parallel processes (default: all CPU cores)."),
    on_error: str = typer.Option(None, "--on-error", metavar="fail|skip", help="fail (default): stop at the first bad file; skip: leave "
                                 "bad files out, map unknown raw values to 255, and report them."),
    images: str = typer.Option("link", "--images", metavar="link|copy|none", help="link (symbolic links to the source images), copy, or none."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite every file, or replace a finished remap of another spec or space."),
) -> None:
    """Write a dataset's labels in the common label space, as a folder dataset.

    OUT/labels/<name>.png holds ids in --space (255 = ignore), with names mirroring the dataset's; OUT/images/ links to the source images, so folder:OUT is a complete dataset. An interrupted run resumes: valid files already in OUT are kept; an unfinished remap of another spec is replaced. Pixels with raw values outside the dataset's table are reported per value at the end. A run that leaves every sample out, or writes only all-ignore (255) labels, fails (exit 1).
    """

    if on_error not in (None, "fail", "skip"):
        raise S2RError(f"--on-error {on_error!r} is not one of fail, skip")
    manifest = remap_dataset(spec, out, space=space, workers=workers, on_error=on_error, overwrite=overwrite,
                             images=images, progress=lambda it, total: track(it, total, "remap"))
    counts = manifest["counts"]
    info(f"remapped {manifest['spec']} to {space} in {out} ({manifest['seconds']:.1f} s)")
    for entry in manifest["skipped"][:10]:
        warn(f"left out {entry['name']}: {entry['error']}")
    if len(manifest["skipped"]) > 10:
        warn(f"... and {len(manifest['skipped']) - 10} more (see {out}/manifest.json)")
    table = Table(title=f"remap {manifest['spec']} -> {out}")
    for key in ("samples", "written", "kept", "skipped", "resized"):
        table.add_column(key, justify="right")
    table.add_row(*(str(counts[k]) for k in ("samples", "written", "kept", "skipped", "resized")))
    stdout.print(table)
    if manifest["all_ignore"]:  # some, not all (that fails the run): worth a look
        names = manifest["all_ignore"]
        warn(f"{len(names)} of {counts['written'] + counts['kept']} labels are entirely ignore (255): "
             + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    if manifest["unknown_pixels"]:
        unknown = Table(title=f"pixels with raw values outside the table (mapped to 255), in "
                              f"{len(manifest['unknown_files'])} file(s)")
        unknown.add_column("raw value", justify="right")
        unknown.add_column("pixels", justify="right")
        for value, pixels in manifest["unknown_pixels"].items():
            unknown.add_row(value, str(pixels))
        stdout.print(unknown)
    else:
        stdout.print("no pixels with raw values outside the table")


def demo(
    out: str = typer.Option(..., "--out", metavar="PATH", help="Output folder for the demo world."),
    n_synthetic: int = typer.Option(400, "--n-synthetic", min=1, help="Synthetic images (with labels)."),
    n_real: int = typer.Option(200, "--n-real", min=1, help="Real training images (labels for SP-Feat/oracle/eval only)."),
    n_real_val: int = typer.Option(100, "--n-real-val", min=0, help="Real validation images (with labels)."),
    size: str = typer.Option("128x256", "--size", metavar="HxW", help="Image size HxW."),
    seed: int = typer.Option(0, "--seed", help="Same seed, byte-identical files."),
    style: str = typer.Option("street", "--style", metavar="|".join(STYLES),
                              help="The world's look: street (the default world) or dusk, a second world rendered "
                                   "differently (palettes, textures, light, noise, JPEG, object proportions) to "
                                   "check that a recipe tuned on one world holds on another."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out: replaces only the demo's "
                                   "own manifest.json, synthetic/, real/ and real_val/ (an earlier demo world), keeps "
                                   "every other file, and refuses if replacing would delete a file the demo did not write."),
) -> None:
    """Write the procedural demo world: a synthetic and a real street-scene domain.

    Synthetic images are flat game-like renderings of mostly built-up streets; real images are textured, noisy, colour-shifted "photos" of mostly green suburbs. Labels are cityscapes19 trainIds. Read them back with the specs demo:OUT?split=synthetic|real|real_val. --out must be new or empty unless --overwrite is given.
    """
    manifest = write_demo_world(out, n_synthetic=n_synthetic, n_real=n_real, n_real_val=n_real_val,
                                size=parse_size(size), seed=seed, overwrite=overwrite, style=style,
                                progress=lambda it, total: track(it, total, "demo world"))
    info(f"wrote the {style} demo world to {out} in {manifest['seconds']:.1f} s")
    table = Table(title=f"demo world {out} ({style}, seed {seed}, {size})")
    table.add_column("class")
    for domain in manifest["counts"]:
        table.add_column(f"{domain} ({manifest['counts'][domain]})", justify="right")
    freqs = manifest["class_frequencies"]
    for name in freqs["synthetic"]:
        table.add_row(name, *(f"{100 * freqs[d][name]:.1f}%" for d in manifest["counts"]))
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command("remap", epilog="Example: s2r prepare remap gta5:/data/gta5 --out gta5_cs19 --workers 8 "
                "--on-error skip")(remap)
    app.command("demo", epilog="Example: s2r prepare demo --out demo --n-synthetic 400 --n-real 200 "
                "(a second, differently rendered world: s2r prepare demo --out dusk --style dusk)")(demo)
