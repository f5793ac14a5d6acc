"""``s2r train MODEL``: train any trainable registered model (translators and segmenters) with the one engine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..console import info
from ..errors import S2RError
from ..models import get_model_entry, list_models
from ..models.config import field_names
from ..training.config import parse_size, resolve_config
from ..training.content import ContentObserver
from ..training.runner import train_run
from ..utils.threads import THREADS_HELP, resolve_threads


def train(
    model: str = typer.Argument(..., help="Registered model to train: " + ", ".join(list_models(trainable=True)) + "."),
    synthetic: Optional[str] = typer.Option(None, "--synthetic", metavar="SPEC", help="Synthetic (source) dataset spec, domain A."),
    real: Optional[str] = typer.Option(None, "--real", metavar="SPEC", help="Real (target) dataset spec, domain B."),
    source: Optional[str] = typer.Option(None, "--source", metavar="SPEC", help="Labelled source dataset spec "
                                         "(adapt: the translated synthetic images, labels carried along)."),
    data: Optional[List[str]] = typer.Option(None, "--data", metavar="ROLE=SPEC", help="Any data role of the model: ROLE=SPEC[,SPEC...] "
                                             "(segmenters train on --data train=SPEC; `s2r models NAME` lists roles)."),
    out: str = typer.Option(..., "--out", metavar="PATH", help="Run folder (config.json, checkpoints/, samples/, metrics.jsonl)."),
    smart_batch: bool = typer.Option(False, "--smart-batch", help="Pair images with the SP-Feat smart batch loader."),
    pairs: Optional[str] = typer.Option(None, "--pairs", metavar="PATH", help="Pairs file from `s2r prepare pairs` (--smart-batch)."),
    preset: Optional[str] = typer.Option(None, "--preset", metavar="NAME", help="Model preset: tiny (CPU tests), paper (default; GPU) or a model's own (unit: cpu, the CPU recipe); `s2r models` lists them."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimisation steps (a resumed run continues to it)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Pairs per step and process."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Training crop size HxW, e.g. 256x512."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for weights, pairs and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from checkpoints/latest.pt."),
    config: Optional[str] = typer.Option(None, "--config", metavar="PATH", help="JSON file with config overrides (e.g. a run's config.json)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override a config key: dotted.key=value (JSON value)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    vgg_weights: Optional[str] = typer.Option(None, "--vgg-weights", metavar="PATH|random", help="VGG weights for the perceptual term: PATH or random."),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", metavar="CKPT", help="Segmenter checkpoint (or its "
                                            "run folder) that sait and adapt build on (train.segmenter)."),
    amp: Optional[str] = typer.Option(None, "--amp", metavar="bf16|fp16", help="Mixed precision on CUDA: bf16 or fp16."),
    accumulate: Optional[int] = typer.Option(None, "--accumulate", help="Micro-batches accumulated per update."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data loading worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", help=THREADS_HELP + " With --resume: the count the run recorded (config.json: threads), because CPU results depend on it and a resume continues bit for bit."),
    content_segmenter: Optional[str] = typer.Option(
        None, "--content-segmenter", metavar="CKPT",
        help="Content preservation while training: a segmenter trained on real images segments the translations "
             "of the preview images every --set train.sample_every steps; mIoU and per-class IoU against their "
             "synthetic labels go to RUN/content.jsonl."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the training step "
                                            "(off by default; minutes of compiling first; eager if it fails)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory "
                                                 "format (default: on CUDA)."),
    cpu_bf16: Optional[bool] = typer.Option(None, "--cpu-bf16/--no-cpu-bf16", help="bf16 autocast on CPU (default: "
                                            "on where the CPU has native bf16, e.g. AVX512-BF16)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --out that already holds a run."),
) -> None:
    """Train a registered model: a translator on synthetic and real data, or a segmenter on labelled sets.

    Config priority: preset < --config < --set < explicit options. RUN/config.json
    is written before step 0; Ctrl-C saves a checkpoint that --resume continues exactly.
    Under torchrun (`torchrun --nproc-per-node 2 -m s2rcli train ...`) it trains data-parallel.
    """
    entry = get_model_entry(model)  # one-line error listing the valid names
    if not entry.trainable:
        raise S2RError(f"model {model!r} cannot be trained by s2r", hint="trainable: " + ", ".join(list_models(trainable=True)))
    options = {
        "data.synthetic": synthetic, "data.real": real, "data.source": source,
        "data.smart_batch": True if smart_batch else None,
        "data.pairs": pairs, "data.size": parse_size(size) if size else None, "seed": seed,
        "train.steps": steps, "train.batch_size": batch_size, "train.amp": amp, "train.accumulate": accumulate,
        "train.workers": workers, "train.vgg_weights": vgg_weights, "train.segmenter": segmenter,
        "train.compile": compile_, "train.channels_last": channels_last, "train.cpu_bf16": cpu_bf16,
    }
    for item in data or ():
        role, _, specs = item.partition("=")
        if role not in entry.data or not specs:
            raise S2RError(f"--data {item!r}: {model} trains on roles {', '.join(entry.data)}",
                           hint=f"e.g. --data {entry.data[0]}=demo:demo?split=synthetic")
        parts = [p.strip() for p in specs.split(",") if p.strip()]
        options[f"data.{role}"] = parts if entry.kind == "segmenter" else parts[0]
    sets = list(set_ or [])
    train_keys = field_names(entry.train_config)
    if "pseudo_labels" in train_keys and not resume:  # a model's own files go in the run folder (--set wins)
        sets.insert(0, f"train.pseudo_labels={Path(out) / 'pseudo_labels'}")
    if "segmenter" in train_keys and not (resume or dry_run):  # checked before the run folder is touched
        _require_segmenter(model, preset, config, sets, options)
    extra = []
    if content_segmenter is not None and not dry_run:
        if entry.kind != "translation":
            raise S2RError("--content-segmenter is for translation models", hint=f"{model} is a {entry.kind}")
        extra.append(ContentObserver(Path(out), content_segmenter))  # measures every train.sample_every steps
    # a new run takes the free cores (--threads' rule); a resumed one the count it recorded
    state = train_run(model, out, preset=preset, config_file=config, sets=sets, options=options,
                      resume=resume, overwrite=overwrite, dry_run=dry_run, extra_observers=extra,
                      threads=threads if resume else resolve_threads(threads))
    if state is None:
        return
    if state.status == "interrupted":
        raise typer.Exit(130)
    if state.dist.is_main:
        info(f"done: {state.step} steps; checkpoint {out}/checkpoints/latest.pt")


def _require_segmenter(model: str, preset, config, sets, options) -> None:
    """Models whose training options name a segmenter checkpoint need one (and it must exist)."""
    path = resolve_config(model, preset=preset, config_file=config, sets=sets, options=options)["train"].get("segmenter")
    if not path:
        raise S2RError(f"{model} needs a segmenter: pass --segmenter CKPT",
                       hint="train one with `s2r segment-eval train-and-test --train SYNTHETIC_SPEC --test REAL_VAL_SPEC "
                            "--out RUN` and pass RUN/checkpoints/latest.pt")
    if not Path(path).exists():
        raise S2RError(f"--segmenter {path}: no such file or folder", hint="pass a segmenter checkpoint or its run folder")


def register(app: typer.Typer) -> None:
    app.command(
        "train", no_args_is_help=True,
        epilog="Example: s2r train unit --preset cpu --synthetic demo:demo?split=synthetic "
        "--real demo:demo?split=real --out runs/unit --smart-batch --pairs pairs.npz",
    )(train)
