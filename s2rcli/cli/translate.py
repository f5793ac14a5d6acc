"""``s2r translate``: run a trained checkpoint over images or label maps."""

from __future__ import annotations

from typing import Optional

import typer

from ..console import settings
from ..device import resolve_device
from ..data.label_formats import label_space_help
from ..inference import translate_dataset
from ..utils.sizes import parse_size
from ..utils.threads import THREADS_HELP, torch_threads


def translate(
    checkpoint: str = typer.Option(..., "--checkpoint", metavar="CKPT", help="An s2r checkpoint (RUN/checkpoints/latest.pt) or a run folder."),
    input: str = typer.Option(..., "--input", metavar="SPEC", help="Folder or dataset spec: images, or label maps for label-to-image models."),
    output: str = typer.Option(..., "--output", metavar="PATH", help="Output folder: images/, labels/ (when the input has them), manifest.json. "
                                                     "Locked while a run writes into it."),
    direction: str = typer.Option("a2b", "--direction", metavar="a2b|b2a", help="a2b: synthetic -> real; b2a: real -> synthetic (image models)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per forward pass (equal-sized images only)."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Resize inputs to HxW first (default: keep each size)."),
    tile: int = typer.Option(1024, "--tile", help="Translate images larger than this in overlapping tiles blended at the "
                             "seams (an info line says when); 0 disables. With instance normalisation (UNIT) tiled "
                             "output differs from untiled by a few grey levels."),
    samples: int = typer.Option(1, "--samples", help="Images per label map (label-to-image models)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the label models' noise, per (seed, index, sample)."),
    no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw generator instead of its EMA copy."),
    label_space: Optional[str] = typer.Option(None, "--label-space", metavar="NAME", help=label_space_help("a plain --input folder")),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that already exist (never into, inside or "
                                                              "around the input folder)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Keep the outputs that OUTPUT/manifest.json says the same "
                                                                      "checkpoint, input and settings made, and do the rest."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", help=THREADS_HELP),
) -> None:
    """Translate synthetic images (or generate from label maps) with a trained model.

    Any image size works (reflect-padded to the model's stride, cropped back). Outputs
    mirror the input names as PNG; labels are carried along, so OUTPUT is a folder: dataset.
    With ?on_error=skip in the --input spec, an empty or truncated input is left out, named
    in a warning and counted in the manifest and the closing line (none readable: exit 1).
    """
    with torch_threads(threads):
        translate_dataset(
            checkpoint, input, output, direction=direction, batch_size=batch_size,
            size=parse_size(size), tile=tile, samples=samples, seed=seed, use_ema=not no_ema, overwrite=overwrite,
            skip_existing=skip_existing, label_space=label_space, device=resolve_device(settings.device),
        )


def register(app: typer.Typer) -> None:
    app.command("translate", no_args_is_help=True,
                epilog="Example: s2r translate --checkpoint runs/unit/checkpoints/latest.pt "
                "--input demo:demo?split=synthetic --output translated/ ; from raw GTA5 label maps: "
                "s2r translate --checkpoint runs/sis/checkpoints/latest.pt --input gta5_labels/ --label-space gta5 "
                "--output generated/")(translate)
