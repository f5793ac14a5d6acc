"""``s2r fid A [B] [--real SPEC] [--synthetic SPEC] [--also C]``: FID and KID of one set against references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..console import settings, stdout
from ..errors import S2RError


def fid(
    a: str = typer.Argument(..., metavar="A", help="The image set under test: a folder of images (subfolders are "
                            "searched, e.g. leftImg8bit/val/<city>/) or a dataset spec."),
    b: Optional[str] = typer.Argument(None, metavar="B", help="A reference set (folder or spec, like A)."),
    real: Optional[str] = typer.Option(None, "--real", metavar="SPEC", help="Real reference set, reported as 'real' (UNIT + smart batch, Table 4)."),
    synthetic: Optional[str] = typer.Option(None, "--synthetic", metavar="SPEC", help="Synthetic reference set, reported as 'synthetic'."),
    also: list[str] = typer.Option([], "--also", metavar="SPEC", help="Further reference sets (repeatable)."),
    kid: bool = typer.Option(False, "--kid", help="Also compute KID (mean and std over 100 subsets of up to 1000 "
                             "images; the std is n/a unless both sets are larger than the subset size)."),
    size: str = typer.Option("256x512", "--size", metavar="HxW", help="Resize every image to HxW (PIL bicubic) before the extractor."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per extractor batch (results do not depend on it)."),
    inception_weights: Optional[str] = typer.Option(
        None, "--inception-weights", metavar="PATH|random",
        help="Inception weights file (weights-inception-2015-12-05-6726825d.pth); default: the torch hub cache, "
        "else download. 'random' uses fixed random features (offline smoke tests; not comparable to papers).",
    ),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default ~/.cache/s2r/fid)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of a table."),
) -> None:
    """Compute FID (and KID) of one image set against one or more references, with a fixed resize.

    Every image is resized with PIL bicubic to --size (default 256x512, no crop)
    and fed as uint8 to torch-fidelity's Inception-v3; features are cached per
    input, keyed by its files (name, size, mtime), the resize and the weights.
    A plain folder whose images sit in subfolders (Cityscapes leftImg8bit/val, one
    subfolder per city) is read recursively, every image counted once.

    A reference with fewer than 2 images is skipped with a warning (listed under
    "skipped" in --json) and the others are still compared. FID on fewer images than
    the extractor's feature dimensions (2048 for Inception) is biased: a warning says
    so; compare FIDs only at equal N.
    """
    from ..device import resolve_device
    from ..metrics.fid import compare, default_cache_dir, parse_size

    references: list[tuple[str, str]] = []
    if b is not None:
        references.append((b, b))
    if real is not None:
        references.append(("real", real))
    if synthetic is not None:
        references.append(("synthetic", synthetic))
    references += [(spec, spec) for spec in also]
    if not references:
        raise S2RError("nothing to compare against", hint="give a second set B, or --real SPEC / --synthetic SPEC / --also SPEC")
    labels = [label for label, _ in references]
    if len(set(labels)) != len(labels):
        raise S2RError("the same reference is given twice", hint="list each reference once")
    size_hw = parse_size(size)
    device = resolve_device(settings.device)
    result = compare(
        a, references, inception_weights=inception_weights, kid=kid, size=size_hw, batch_size=batch_size, device=device,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
    )
    if as_json:
        stdout.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    stdout.print(render_table(result))


def render_table(result: dict):
    from rich.table import Table

    protocol = result["protocol"]
    title = "FID" if protocol["comparable_to_papers"] else f"FID ({protocol['label']})"
    table = Table(title=f"{title} of {result['input']['spec']} ({result['input']['count']} images)",
                  caption=f"{protocol['extractor']}, PIL bicubic to {protocol['size'][0]}x{protocol['size'][1]}")
    table.add_column("against")
    table.add_column("images", justify="right")
    table.add_column("FID", justify="right")
    with_kid = any("kid_mean" in r for r in result["results"])
    if with_kid:
        table.add_column("KID x 1e3", justify="right")
    for row in result["results"]:
        cells = [row["reference"] if row["reference"] == row["spec"] else f"{row['reference']} ({row['spec']})",
                 str(row["count"]), f"{row['fid']:.2f}"]
        if with_kid:
            std = row.get("kid_std")
            cells.append(f"{row['kid_mean'] * 1e3:.2f} ± " + ("n/a" if std is None else f"{std * 1e3:.2f}"))
        table.add_row(*cells)
    for row in result.get("skipped", []):
        cells = [row["reference"] if row["reference"] == row["spec"] else f"{row['reference']} ({row['spec']})",
                 str(row["count"]), "skipped"]
        table.add_row(*cells, *(["skipped"] if with_kid else []))
    return table


def register(app: typer.Typer) -> None:
    app.command(
        "fid",
        epilog="Example: s2r fid translated/ --real demo:demo?split=real --synthetic demo:demo?split=synthetic --kid "
        "(a nested folder works too: s2r fid translated/ --real cityscapes/leftImg8bit/val)",
    )(fid)
