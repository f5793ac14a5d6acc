"""``s2r segment-eval``: segmentation-based evaluation (score, test, train-and-test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..compare import compare as run_compare
from ..console import info, settings, stdout
from ..device import resolve_device
from ..errors import S2RError
from ..evaluation import scores_table, split_specs
from ..evaluation import evaluate_segmenter, score_generated
from ..evaluation import train_and_test as run_train_and_test
from ..inference import label_space_help
from ..models import get_model_entry
from ..utils.sizes import parse_size

segment_app = typer.Typer(no_args_is_help=True, help="Segmentation-based evaluation: score images, test a segmenter, or train and test one.")


@segment_app.command(
    "score",
    epilog="Example: s2r segment-eval score --images generated/ --labels demo:demo?split=synthetic "
    "--segmenter runs/seg/checkpoints/latest.pt ; raw GTA5 label files: s2r segment-eval score --images "
    "generated/ --labels gta5_labels/ --label-space gta5 --segmenter runs/seg/checkpoints/latest.pt",
)
def score(
    images: str = typer.Option(..., "--images", metavar="SPEC", help="Generated images: a folder (its images/ subfolder if present) "
                                                     "or a dataset spec KIND:PATH[?opts]."),
    labels: str = typer.Option(..., "--labels", metavar="SPEC", help="Dataset spec of the label maps the images were generated from."),
    segmenter: Path = typer.Option(..., "--segmenter", metavar="CKPT", help="Segmenter checkpoint (from `segment-eval train-and-test`)."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Working size HxW (default: the segmenter's training size)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    label_space: Optional[str] = typer.Option(
        None, "--label-space", metavar="NAME",
        help=label_space_help("a plain --labels folder", "the segmenter"),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of a table."),
) -> None:
    """Segment generated images and compare with the labels they came from (mIoU, accuracy).

    Images are matched to labels by name; a generated name may carry an _sNN
    suffix (several samples per label map). Each image is scaled to cover the
    working size with its aspect ratio kept and centre-cropped (never squashed);
    the logits are resized onto the same window of the label, at the label's own
    resolution, before the argmax; only that window is scored.
    """
    result = score_generated(images, labels, segmenter, size=parse_size(size), batch_size=batch_size,
                             device=resolve_device(settings.device), label_space=label_space)
    if as_json:
        stdout.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    stdout.print(scores_table(result["scores"], f"{result['images']}: {result['scored']} images scored against "
                                                f"{result['label_maps']} label maps ({result['label_space']})"))


@segment_app.command(
    "test",
    epilog="Example: s2r segment-eval test --segmenter runs/adapt --test demo:demo?split=real_val --json "
    "--save-predictions predictions/",
)
def segmenter_test(
    segmenter: Path = typer.Option(..., "--segmenter", metavar="CKPT", help="Segmenter checkpoint or its run folder "
                                                                           "(train-and-test, s2r train fastseg/adapt)."),
    test_spec: str = typer.Option(..., "--test", metavar="SPEC", help="Labelled test set spec, e.g. demo:demo?split=real_val."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Working size HxW (default: the segmenter's training size)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per forward pass."),
    save_predictions: Optional[Path] = typer.Option(
        None, "--save-predictions", metavar="DIR",
        help="Write one trainId PNG per test image, named like the image: DIR/<name>.png (subfolders mirrored).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of a table."),
) -> None:
    """Test an existing segmenter on a labelled real set: mIoU over the classes present, per-class IoU.

    Scores are computed as in train-and-test: each image is scaled to cover the working
    size with its aspect ratio kept and centre-cropped (never squashed); the logits are
    resized onto the same window of the label, at its own resolution, before the argmax;
    only that window is scored (255 ignored). --save-predictions writes 255 outside it.
    """
    result = evaluate_segmenter(segmenter, test_spec, size=parse_size(size), batch_size=batch_size,
                                device=resolve_device(settings.device), save_predictions=save_predictions)
    title = (f"{result['test']}: {result['segmenter_model']} from {result['segmenter']} "
             f"({result['test_images']} images, {result['classes_present']} classes present)")
    if as_json:
        stdout.print(json.dumps(result, indent=2), markup=False, highlight=False)
    else:
        stdout.print(scores_table(result["scores"], title))


@segment_app.command(
    "train-and-test",
    epilog="Example: s2r segment-eval train-and-test --train demo:demo?split=synthetic --test demo:demo?split=real_val "
    "--model fastseg --steps 600 --out runs/seg_synthetic",
)
def train_and_test(
    train: list[str] = typer.Option(..., "--train", metavar="SPEC", help="Training set spec(s): SPEC[,SPEC...] (repeatable); their union is used."),
    test: str = typer.Option(..., "--test", metavar="SPEC", help="Labelled test set spec, e.g. demo:demo?split=real_val."),
    model: str = typer.Option("fastseg", "--model", metavar="NAME", help="Segmenter from the registry: fastseg, deeplabv3, fcn, ... (`s2r models` lists them)."),
    out: Path = typer.Option(..., "--out", metavar="PATH", help="Run folder (config.json, checkpoints/, metrics.jsonl, results.json)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    preset: str = typer.Option("tiny", "--preset", metavar="NAME", help="Model preset: tiny (CPU) or paper."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Training and testing size HxW (default: the preset's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Batch size (default: the preset's)."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, data order and augmentation."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the preset's)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data loader workers."),
    backbone_weights: Optional[str] = typer.Option(
        None, "--backbone-weights", metavar="PATH|random",
        help="ImageNet ResNet-50 weights for deeplabv3/fcn: a path, or 'random'; default: cache, else download.",
    ),
    label_space: str = typer.Option("cityscapes19", "--label-space", metavar="NAME", help="Label space to train and test in."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped, then test."),
    config: Optional[str] = typer.Option(None, "--config", metavar="PATH", help="JSON file with config overrides (e.g. a run's config.json)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override a config key: dotted.key=value (JSON value)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Train a segmenter on one or more sets and report per-class IoU on a test set.

    As in Tables 1-3 of the UNIT + smart batch paper (docs/papers.md): train on raw synthetic, translated synthetic, real,
    or mixes, and test on real validation images. Training is an ordinary `s2r train`
    run (same loop, config and checkpoint format): RUN/config.json first, then
    RUN/checkpoints/latest.pt, RUN/metrics.jsonl, and RUN/results.json after the test.
    Training and testing bring every frame to --size the same way: scaled to cover it
    with the aspect ratio kept, then centre-cropped (a 4:3 frame at 2:1 loses a band at
    the top and bottom, never squashed); the test scores that window of each label at
    the label's own resolution.
    """
    get_model_entry(model, kind="segmenter")  # an unknown name fails here, listing the valid ones
    result = run_train_and_test(
        split_specs(train), test, model, out, preset=preset, steps=steps, size=parse_size(size),
        batch_size=batch_size, seed=seed, lr=lr, workers=workers, backbone_weights=backbone_weights,
        label_space=label_space, config_file=config, sets=set_ or [], resume=resume, overwrite=overwrite,
        device=resolve_device(settings.device),
    )
    if as_json:
        stdout.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    stdout.print(scores_table(
        result["scores"],
        f"{result['test']}: {result['model']} trained on {' + '.join(result['train'])} "
        f"({result['steps']} steps, seed {result['seed']})",
    ))


@segment_app.command(
    "compare",
    epilog="Example: s2r segment-eval compare --synthetic demo:demo?split=synthetic "
    "--translated unit=folder:translated/unit --real-train demo:demo?split=real "
    "--test demo:demo?split=real_val --out runs/compare --seeds 0,1",
)
def compare(
    synthetic: str = typer.Option(..., "--synthetic", metavar="SPEC", help="The raw synthetic set (with labels)."),
    translated: list[str] = typer.Option(..., "--translated", metavar="NAME=SPEC",
                                         help="A translated set, e.g. unit=folder:out/unit (repeatable); "
                                              "`s2r translate` output carries its labels."),
    real_train: str = typer.Option(..., "--real-train", metavar="SPEC", help="Labelled real training set (the oracle)."),
    test: str = typer.Option(..., "--test", metavar="SPEC", help="Labelled real test set."),
    out: Path = typer.Option(..., "--out", metavar="PATH",
                             help="Folder: one run per set and seed, compare.json and compare.png."),
    model: str = typer.Option("fastseg", "--model", metavar="NAME", help="Segmenter from the registry."),
    preset: str = typer.Option("tiny", "--preset", metavar="NAME", help="Segmenter preset: tiny (CPU) or paper."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, metavar="N", help="Training steps (default: the preset's)."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Training and testing size (default: the preset's)."),
    seeds: str = typer.Option("0", "--seeds", metavar="N,N", help="Seeds: every set is trained once per seed."),
    label_space: str = typer.Option("cityscapes19", "--label-space", metavar="NAME", help="Label space to train and test in."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
) -> None:
    """Does translation help? Train the same segmenter on raw synthetic, each translated set and real;
    test each on real images, and report mIoU and the share of the raw-to-real gap each translation closes.

    Runs that finished are reused and a stopped one resumes exactly, so the same command
    continues after a kill. Writes OUT/compare.json and the bar chart OUT/compare.png.
    """
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise S2RError(f"--seeds {seeds!r} is not a comma-separated list of integers", hint="e.g. --seeds 0,1") from None
    get_model_entry(model, kind="segmenter")
    result = run_compare(synthetic, translated, real_train, test, out, model=model, preset=preset, steps=steps,
                         size=parse_size(size), seeds=seed_list, label_space=label_space,
                         device=resolve_device(settings.device))
    if as_json:
        stdout.print(json.dumps(result, indent=2), markup=False, highlight=False)
        return
    table = Table(title=f"{model} trained on each set, tested on {test} (seeds {', '.join(map(str, seed_list))})")
    table.add_column("training set")
    table.add_column("mIoU %", justify="right")
    table.add_column("gap closed %", justify="right")
    for row in result["rows"]:
        per_seed = ", ".join(f"{100 * v:.1f}" for v in row["miou"].values())
        gap = "—" if row["gap_closed_mean"] is None else f"{100 * row['gap_closed_mean']:.0f}"
        table.add_row(row["name"], f"{100 * row['miou_mean']:.1f} ({per_seed})", gap)
    stdout.print(table)
    info(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment-eval",
                  epilog="Example: s2r segment-eval train-and-test --train demo:demo?split=synthetic "
                  "--test demo:demo?split=real_val --out runs/seg")
