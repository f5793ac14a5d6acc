"""``s2r translate``: run a trained checkpoint over images or label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..checkpoint import load_checkpoint
from ..console import info, settings, stdout
from ..data.label_formats import label_space_help
from ..device import resolve_device
from ..evaluation import score_generated
from ..inference import translate_dataset
from ..models import get_model_entry
from ..utils.atomic import atomic_write_json
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
    segmenter: Optional[str] = typer.Option(None, "--segmenter", metavar="CKPT",
                                            help="Content preservation: a segmenter trained on real images segments "
                                                 "the outputs (and, for image models, the inputs); its per-class IoU "
                                                 "against the input's labels is printed and saved to OUTPUT/content.json."),
) -> None:
    """Translate synthetic images (or generate from label maps) with a trained model.

    Any image size works (reflect-padded to the model's stride, cropped back). Outputs
    mirror the input names as PNG; labels are carried along, so OUTPUT is a folder: dataset.
    With ?on_error=skip in the --input spec, an empty or truncated input is left out, named
    in a warning and counted in the manifest and the closing line (none readable: exit 1).
    """
    device = resolve_device(settings.device)
    with torch_threads(threads):
        if segmenter is not None:
            load_checkpoint(segmenter)  # a wrong path fails before anything is translated
        translate_dataset(
            checkpoint, input, output, direction=direction, batch_size=batch_size,
            size=parse_size(size), tile=tile, samples=samples, seed=seed, use_ema=not no_ema, overwrite=overwrite,
            skip_existing=skip_existing, label_space=label_space, device=device,
        )
        if segmenter is not None:
            report_content(checkpoint, input, output, segmenter, label_space, device)


def report_content(checkpoint: str, input: str, output: str, segmenter: str, label_space: str | None, device) -> dict:
    """Score the outputs (and an image model's inputs) with a real-trained segmenter against the input labels."""
    translated = score_generated(output, input, segmenter, device=device, label_space=label_space)
    image_model = get_model_entry(str(load_checkpoint(checkpoint)["model"])).input_kind == "image"
    raw = score_generated(input, input, segmenter, device=device, label_space=label_space) if image_model else None
    result = {"segmenter": str(segmenter), "translated": translated["scores"], "raw": raw["scores"] if raw else None}
    atomic_write_json(Path(output) / "content.json", result, overwrite=True)
    table = Table(title=f"content preservation: {segmenter} on the outputs vs the input labels (IoU %)")
    table.add_column("class")
    if raw:
        table.add_column("raw input", justify="right")
    table.add_column("translated", justify="right")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for name, iou in translated["scores"]["per_class_iou"].items():
        table.add_row(name, *([pct(raw["scores"]["per_class_iou"].get(name))] if raw else []), pct(iou))
    table.add_section()
    table.add_row("[bold]mIoU[/bold]", *([pct(raw["scores"]["miou"])] if raw else []), pct(translated["scores"]["miou"]))
    stdout.print(table)
    if raw:
        better = translated["scores"]["miou"] > raw["scores"]["miou"]
        info(f"content mIoU {100 * translated['scores']['miou']:.1f}% translated vs {100 * raw['scores']['miou']:.1f}% "
             f"raw: the translation {'keeps more' if better else 'keeps less'} of what the labels say, as a real-image "
             f"segmenter sees it; saved to {Path(output) / 'content.json'}")
    return result


def register(app: typer.Typer) -> None:
    app.command("translate", no_args_is_help=True,
                epilog="Example: s2r translate --checkpoint runs/unit/checkpoints/latest.pt "
                "--input demo:demo?split=synthetic --output translated/ ; from raw GTA5 label maps: "
                "s2r translate --checkpoint runs/sis/checkpoints/latest.pt --input gta5_labels/ --label-space gta5 "
                "--output generated/")(translate)
