"""Everything ``s2r train`` does around the loop: the run folder, data, observers, DDP.

:func:`train_run` is the importable function behind the command::

    from s2rcli.training.runner import train_run
    state = train_run("unit", "runs/unit", preset="tiny",
                      options={"data.synthetic": "demo:demo?split=synthetic", "data.real": "demo:demo?split=real"})

A run folder holds ``config.json`` (written before step 0), ``checkpoints/latest.pt``,
``metrics.jsonl``, ``samples/step_NNNNNN.png`` and ``losses.png``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..console import console, info, settings, stdout, warn
from ..device import DistInfo, resolve_device
from ..errors import S2RError
from ..data.datasets import open_dataset
from ..data.pair_source import refuse_same_images
from ..data.sampler import check_pairs_file
from ..models import create_model, get_model_entry, list_models
from .config import config_differences, resolve_config
from .distributed import barrier, cleanup, init_distributed
from .loop import COMPILE_MODES, OPTIMIZER_IMPLS, FastPath, Observer, TrainState, seed_everything, train
from .observers import CheckpointObserver, LossPlotObserver, SampleObserver
from .progress import ProgressObserver
from .stats import MetricsObserver, write_config
from ..utils.sizes import available_memory, format_bytes

RUN_ARTIFACTS = ("checkpoints", "samples", "metrics.jsonl", "losses.png", "config.json", "results.json")

# Keys that may change on --resume without breaking the exact continuation.
RESUMABLE_CHANGES = {"train.steps", "train.checkpoint_every", "train.keep_every", "train.sample_every",
                     "train.log_every", "train.workers", "train.samples", "train.cache_mb", "train.prefetch"}
# Keys that may change with a warning (data that moved); every other change is refused, because
# the restored optimiser and scheduler states would silently override it.
MOVABLE = {"data.synthetic", "data.real", "data.pairs", "data.train", "data.source"}


def latest_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "latest.pt"


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run: an existing run needs ``--resume`` or ``--overwrite``."""
    if resume and overwrite:
        raise S2RError("--resume and --overwrite contradict each other", hint="pick one")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise S2RError(f"--out {run_dir} is a file, not a folder")
    has_run = latest_checkpoint(run_dir).exists()
    if resume and not has_run:
        raise S2RError(f"nothing to resume: {latest_checkpoint(run_dir)} does not exist",
                       hint="drop --resume to start a new run")
    if has_run and not (resume or overwrite):
        raise S2RError(f"run folder {run_dir} already holds a run",
                       hint="pass --resume to continue it, --overwrite to start over, or choose another --out")


def clear_run_dir(run_dir: Path) -> None:
    """Remove what a previous run wrote (and nothing else the folder holds)."""
    for name in RUN_ARTIFACTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def open_training_data(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Open the dataset specs of every data role the model trains on, in the run's label space.

    A role holds one spec, or a list of specs (a list opens as a list of datasets).
    """
    data: dict[str, Any] = {}
    space = cfg.get("label_space") or "cityscapes19"
    entry = get_model_entry(cfg["model"])
    for key in entry.data:
        value = cfg["data"].get(key)
        specs = value if isinstance(value, (list, tuple)) else [value] if value else []
        if not specs:
            raise S2RError(f"--{key} is required", hint=f"give a dataset spec, e.g. --{key} demo:demo?split={key}")
        opened = []
        for spec in specs:
            dataset = open_dataset(spec, space=space)
            if len(dataset) == 0:
                raise S2RError(f"--{key} {spec}: the dataset has no images", hint="check the path and split")
            if key in entry.labelled and not dataset.has_labels:
                raise S2RError(f"--{key} {spec} has no labels, and {cfg['model']} trains on label maps there",
                               hint="point it at a dataset with labels (`s2r translate` output carries them)")
            opened.append(dataset)
        data[key] = opened if isinstance(value, (list, tuple)) else opened[0]
    pairs = cfg["data"].get("pairs")
    if cfg["data"].get("smart_batch") and not (pairs and Path(pairs).is_file()):
        raise S2RError(f"--smart-batch needs a pairs file{f'; {pairs} does not exist' if pairs else ''}",
                       hint="compute one with `s2r prepare pairs ... --out pairs.npz` and pass --pairs pairs.npz")
    return data


def make_observers(cfg: Mapping[str, Any], run_dir: Path, task, *, quiet: bool = False) -> list[Observer]:
    """Progress bar, metrics.jsonl, checkpoints, sample grids and the loss plot, in that order
    (metrics flush before the plot reads them)."""
    train_cfg = cfg["train"]
    fixed = task.data.fixed_batch(int(train_cfg.get("samples", 4))) if hasattr(task.data, "fixed_batch") else None
    observers: list[Observer] = []
    if not quiet:
        observers.append(ProgressObserver())
    observers += [
        MetricsObserver(run_dir, every=int(train_cfg["log_every"])),
        CheckpointObserver(run_dir, every=int(train_cfg["checkpoint_every"]), monitor=task.monitor,
                           keep_every=int(train_cfg.get("keep_every", 0))),
        SampleObserver(run_dir, fixed, every=int(train_cfg["sample_every"])),
        LossPlotObserver(run_dir, every=int(train_cfg["checkpoint_every"])),
    ]
    return observers


def run_training(
    cfg: dict[str, Any],
    run_dir: Path,
    *,
    device: torch.device,
    resume: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    dist: DistInfo | None = None,
    observers: Sequence[Observer] | None = None,
    extra_observers: Iterable[Observer] = (),
) -> TrainState:
    """Build the model's task from a resolved config and run the loop.

    ``data`` defaults to opening the config's specs; ``observers`` defaults to
    :func:`make_observers`; ``resume`` is a loaded checkpoint.
    """
    dist = dist or DistInfo()
    train_cfg = cfg["train"]
    check_fast_path(train_cfg)
    fast = FastPath.resolve(train_cfg, device)
    if train_cfg.get("amp") and device.type != "cuda":
        precision = "bf16 autocast (train.cpu_bf16)" if fast.cpu_bf16 else "fp32"
        info(f"note: --amp {train_cfg['amp']} applies to CUDA only; training on {device.type} in {precision}")
    data = data if data is not None else open_training_data(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed training sizes: let cuDNN pick the fastest kernels
    seed_everything(int(cfg["seed"]), 0)  # identical initial weights on every rank (rank 0's are broadcast anyway)
    entry = get_model_entry(cfg["model"])
    model = create_model(cfg["model"], **cfg["model_kwargs"])
    task = entry.make_task(model, cfg, data, dist, device)
    if observers is None:
        observers = make_observers(cfg, run_dir, task, quiet=settings.quiet or not dist.is_main)
    return train(
        task, steps=int(train_cfg["steps"]), device=device, config=cfg, run_dir=Path(run_dir), seed=int(cfg["seed"]),
        accumulate=int(train_cfg["accumulate"]), amp=train_cfg.get("amp"), ema_decay=float(train_cfg["ema_decay"]),
        resume=resume, observers=[*observers, *extra_observers], dist=dist, fast=fast,
    )


# --- the fast path --------------------------------------------------------------------------------

FAST_PATH_KEYS = ("channels_last", "cpu_bf16", "optimizer_impl")  # None in a config: decided by the device


def check_fast_path(train_cfg: Mapping[str, Any]) -> None:
    """One-line errors for fast-path settings of the wrong kind (``--set train.compile=yes``)."""
    for key in ("channels_last", "cpu_bf16", "compile"):
        value = train_cfg.get(key)
        if value is not None and not isinstance(value, bool):
            raise S2RError(f"train.{key} must be true, false{' or null (automatic)' if key != 'compile' else ''}, "
                           f"got {value!r}")
    impl = train_cfg.get("optimizer_impl")
    if impl is not None and impl not in OPTIMIZER_IMPLS:
        raise S2RError(f"train.optimizer_impl must be one of {', '.join(OPTIMIZER_IMPLS)} or null (automatic), "
                       f"got {impl!r}")
    mode = train_cfg.get("compile_mode")
    if mode is not None and mode not in COMPILE_MODES:
        raise S2RError(f"train.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    for key in ("cache_mb", "prefetch"):
        value = train_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                                  or (key == "prefetch" and (not isinstance(value, int) or value < 1))):
            raise S2RError(f"train.{key} must be a {'positive integer' if key == 'prefetch' else 'number >= 0'}, "
                           f"got {value!r}")


def resolve_fast_path(cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Fill the automatic (``null``) fast-path settings of a new run for ``device``, so ``config.json``
    records what the run does and a resume on another machine does the same."""
    train_cfg = cfg["train"]
    check_fast_path(train_cfg)
    if not any(key in train_cfg and train_cfg[key] is None for key in FAST_PATH_KEYS):
        return cfg
    fast = FastPath.resolve(train_cfg, device)
    resolved = {"channels_last": fast.channels_last, "cpu_bf16": fast.cpu_bf16, "optimizer_impl": fast.optimizer}
    out = {**cfg, "train": dict(train_cfg)}
    for key in FAST_PATH_KEYS:
        if key in train_cfg and train_cfg[key] is None:
            out["train"][key] = resolved[key]
    return out


# --- training sizes -------------------------------------------------------------------------------

SIZE_PROBE_BATCH = 2  # batch norm needs more than one value per channel
SIZE_PROBE_LIMIT = 1024  # the largest side (in multiples of the stride) tried when looking for the minimum
SIZE_PROBE_REFERENCE = 256  # the side (pixels, at least) at which activations per pixel are counted


@dataclass(frozen=True)
class SizeProbe:
    """What a model's networks need of a training size, found on PyTorch's ``meta`` device
    (shapes only: no memory, no arithmetic, so any model is probed in a fraction of a second).

    ``multiple``: sides must be multiples of it (a translator's ``stride``: 2 ** downsamplings;
    segmenters pad their input, so 1). ``min_side``: the smallest side (a multiple of ``multiple``)
    at which every probed network runs in training mode. ``values_per_pixel``: the outputs of every
    layer in one forward pass of the networks, per input pixel and image. ``parameters``: weights.
    """

    multiple: int
    min_side: int
    values_per_pixel: float
    parameters: int


def _probe_calls(model: nn.Module, entry) -> list[tuple[str, Callable[[int], Any]]]:
    """The forward passes probed: the model's own (translate, generate or forward), then each
    network it holds that takes an image (discriminators); those that cannot are left out."""
    def image(side: int) -> torch.Tensor:
        return torch.zeros(SIZE_PROBE_BATCH, 3, side, side, device="meta")

    if entry.input_kind == "label":
        calls = [("generate", lambda side: model.generate(
            torch.zeros(SIZE_PROBE_BATCH, side, side, dtype=torch.long, device="meta")))]
    elif entry.kind == "translation":
        calls = [("translate", lambda side: model.translate(image(side)))]
    else:
        calls = [("forward", lambda side: model(image(side)))]
    for name, child in model.named_children():
        nets = child.items() if isinstance(child, nn.ModuleDict) else [(None, child)]
        for sub, net in nets:
            calls.append((name if sub is None else f"{name}[{sub}]", lambda side, net=net: net(image(side))))
    return calls


def probe_model_size(model_name: str, model_kwargs: Mapping[str, Any]) -> SizeProbe | None:
    """Probe ``model_name`` built with ``model_kwargs`` (see :class:`SizeProbe`); None when the
    model cannot be built or run on the meta device (then nothing is checked)."""
    entry = get_model_entry(model_name)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(model_name, **dict(model_kwargs))
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is simply not probed
        return None
    model.train()
    multiple = max(1, int(getattr(model, "stride", 1))) if entry.kind == "translation" else 1
    ran: set[int] = set()
    count = [0]

    def hook(module, _inputs, output):
        ran.add(id(module))
        if getattr(module, "inplace", False):
            return  # writes over its input: no new memory
        for out in (output if isinstance(output, (tuple, list)) else
                    output.values() if isinstance(output, dict) else [output]):
            if torch.is_tensor(out):
                count[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]

    def attempt(call, side: int) -> tuple[bool, int, set[int]]:
        ran.clear()
        count[0] = 0
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call(side * multiple)
        except Exception:  # noqa: BLE001 - any failure at this size: too small, or not an image network
            return False, 0, set()
        return True, count[0], set(ran)

    min_side, per_pixel, covered = multiple, 0.0, set()
    try:
        for index, (_name, call) in enumerate(_probe_calls(model, entry)):
            low, high = 0, 1  # multiples: low fails (0 by definition), high is being tried
            ok, values, modules = attempt(call, high)
            while not ok and high < SIZE_PROBE_LIMIT:
                low, high = high, high * 2
                ok, values, modules = attempt(call, high)
            if not ok:
                continue  # takes no image (e.g. a label generator's own network): not probed
            while high - low > 1:  # the smallest working multiple, assuming larger ones work too
                mid = (low + high) // 2
                ok_mid, values_mid, modules_mid = attempt(call, mid)
                if ok_mid:
                    high, values, modules = mid, values_mid, modules_mid
                else:
                    low = mid
            min_side = max(min_side, high * multiple)
            if index > 0 and modules & covered:
                continue  # part of a pass already counted (a segmenter's backbone)
            # Count at a fair size: near the minimum, padding and rounding dominate the per-pixel figure.
            reference = max(high, -(-SIZE_PROBE_REFERENCE // multiple))
            ok_ref, values_ref, modules_ref = attempt(call, reference)
            if ok_ref:
                values, modules, high = values_ref, modules_ref, reference
            covered |= modules
            per_pixel += values / (SIZE_PROBE_BATCH * (high * multiple) ** 2)
    finally:
        for handle in handles:
            handle.remove()
    if not covered:
        return None
    return SizeProbe(multiple, min_side, per_pixel, sum(p.numel() for p in model.parameters()))


def estimate_training_memory(probe: SizeProbe, size: Sequence[int], batch_size: int, bytes_per_value: int = 4) -> int:
    """A rough estimate of the memory one training step takes, in bytes (the method, documented):

    ``batch × H × W × values_per_pixel × bytes`` for the activations (the layer outputs of one
    forward pass of every probed network, counted on the meta device at a 256-pixel side and
    scaled by the pixels: what autograd keeps for the backward pass), plus ``16 bytes`` per weight
    (the weights, their gradients and two Adam moments). Real steps run some networks more than
    once (cycle and adversarial terms) and hold gradients besides, so training needs more than
    this: a size refused on it would surely not fit, while one that passes may still be too large.
    """
    h, w = int(size[0]), int(size[1])
    activations = batch_size * h * w * probe.values_per_pixel * bytes_per_value
    return int(activations + 16 * probe.parameters)


def check_training_size(cfg: Mapping[str, Any], device: torch.device) -> None:
    """Refuse a ``--size`` the model cannot train at, in one line, before anything is written:
    sides that are not multiples of the model's stride or below its minimum, or a size whose
    estimated memory (:func:`estimate_training_memory`) exceeds what ``device`` has available."""
    size = (cfg.get("data") or {}).get("size")
    if not size:
        return
    h, w = int(size[0]), int(size[1])
    model = cfg["model"]
    probe = probe_model_size(model, cfg.get("model_kwargs") or {})
    if probe is None:
        return
    m, low = probe.multiple, probe.min_side
    if h % m or w % m or min(h, w) < low:
        fit_h, fit_w = (max(low, round(v / m) * m) for v in (h, w))
        downs = math.log2(m)
        why = (f" (the model's stride: it downsamples {int(downs)} times)" if m > 1 and downs.is_integer()
               else " (the model's stride)" if m > 1 else "")
        raise S2RError(f"--size {h}x{w} does not suit {model} ({cfg.get('preset') or 'this'} preset): sides must be "
                       f"at least {low} pixels" + (f" and multiples of {m}{why}" if m > 1 else ""),
                       hint=f"e.g. --size {fit_h}x{fit_w}")
    batch = int(cfg["train"].get("batch_size", 1))
    half = cfg["train"].get("amp") in ("fp16", "bf16") and device.type == "cuda"
    need = estimate_training_memory(probe, (h, w), batch, 2 if half else 4)
    if device.type == "cuda" and device.index is None:  # under torchrun each process gets its local GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    have, where = available_memory(device)
    if have is not None and need > have:
        raise S2RError(f"--size {h}x{w} with batch size {batch} needs about {format_bytes(need)} to train {model} "
                       f"(a low estimate: the activations of one forward pass of its networks, plus weights and "
                       f"optimiser state), but only {format_bytes(have)} of {where} is left",
                       hint="train on smaller crops (--size) or fewer images a step (--batch-size); `s2r translate` "
                            "runs the model on full-size images by tiles")


def resolve_run_config(
    model: str, run_dir: Path, *, preset: str | None, config_file: str | None, sets: Sequence[str],
    options: Mapping[str, Any], resume: bool,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config for a new run, or (with ``resume``) the run's own config plus allowed changes."""
    if not resume:
        return resolve_config(model, preset=preset, config_file=config_file, sets=sets, options=options), None
    ckpt = load_checkpoint(latest_checkpoint(run_dir))
    if ckpt["model"] != model:
        raise S2RError(f"{run_dir} is a {ckpt['model']!r} run, not {model!r}",
                       hint=f"resume it with `s2r train {ckpt['model']} --out {run_dir} --resume`")
    saved = ckpt.get("config") or {}
    cfg = resolve_config(model, preset=preset, config_file=config_file, sets=sets, options=options, base=saved)
    changed = [k for k in config_differences(saved, cfg) if k not in RESUMABLE_CHANGES]
    fixed = [k for k in changed if k not in MOVABLE]
    if fixed:
        raise S2RError(f"--resume cannot change {', '.join(fixed)}: a run keeps its settings",
                       hint="resume without them (only --steps, the logging intervals and --workers may change), "
                            "or start a new run in another --out")
    if "train.steps" in config_differences(saved, cfg) and cfg["train"].get("lr_schedule") == "poly":
        warn("the poly learning-rate schedule stretches to the new --steps: the run no longer continues exactly")
    if changed:
        warn("resuming with other data (" + ", ".join(changed) + "): the run no longer continues exactly")
    return cfg, ckpt


def train_run(
    model: str,
    run_dir: str | Path,
    *,
    preset: str | None = None,
    config_file: str | None = None,
    sets: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    device: torch.device | None = None,
    data: dict[str, Any] | None = None,
    extra_observers: Iterable[Observer] = (),
    threads: int | None = None,
) -> TrainState | None:
    """``s2r train`` as a function: resolve the config, prepare the run folder, train.

    ``threads``: torch's CPU threads for the run (restored afterwards). ``None``: a new run keeps the
    process's setting, a resumed run takes the count it recorded, because results on a CPU depend
    on it (a different count sums in another order), and a resume should continue bit for bit.
    Under ``torchrun`` each process joins the group; rank 0 alone writes files.
    Returns the final :class:`TrainState` (``None`` for a dry run).
    """
    entry = get_model_entry(model)
    if not entry.trainable:
        raise S2RError(f"model {model!r} cannot be trained by s2r",
                       hint="trainable: " + ", ".join(list_models(trainable=True)))
    run_dir = Path(run_dir)
    options = dict(options or {})
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    cfg, ckpt = resolve_run_config(model, run_dir, preset=preset, config_file=config_file, sets=sets,
                                   options=options, resume=resume)
    if dry_run:
        stdout.print_json(json.dumps(cfg))
        console.print("Dry run; exiting.")
        return None
    if (entry.input_kind == "label" or entry.kind == "segmenter") and cfg["label_space"] is None:
        raise S2RError(f"{model} needs a label space", hint="--set label_space=cityscapes19")

    device = device or resolve_device(settings.device)
    check_training_size(cfg, device)  # impossible sizes fail before the run folder is touched
    data = data if data is not None else open_training_data(cfg)  # bad specs too
    if data.get("synthetic") is not None and data.get("real") is not None:
        refuse_same_images(data["synthetic"], data["real"])
        if cfg["data"].get("smart_batch") and cfg["data"].get("pairs"):
            check_pairs_file(cfg["data"]["pairs"], data["synthetic"], data["real"])  # made from these files?
    dist = init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if ckpt is None:
        cfg = resolve_fast_path(cfg, device)  # what "automatic" means on this machine, recorded in config.json
    previous_threads = torch.get_num_threads()
    cfg = {**cfg, "threads": run_threads(cfg, threads, resumed=ckpt is not None)}
    try:
        torch.set_num_threads(cfg["threads"])
        if dist.is_main:
            if overwrite:
                clear_run_dir(run_dir)
            write_config(run_dir, cfg, overwrite=True)
        barrier()
        where = f"{dist.world_size} processes" if dist.enabled else device.type
        if dist.is_main:
            start = f"resuming {model} at step {ckpt['step']}" if ckpt else f"training {model} ({cfg['preset']} preset)"
            fast = FastPath.resolve(cfg["train"], device)
            info(f"{start} on {where} ({fast.describe()}); run folder {run_dir}")
            if cfg["preset"] == "paper" and device.type == "cpu":
                warn("the paper preset on a CPU takes tens of seconds a step; --preset tiny is the CPU setting")
        state = run_training(cfg, run_dir, device=device, resume=ckpt, data=data, dist=dist,
                             extra_observers=extra_observers)
        barrier()
    finally:
        torch.set_num_threads(previous_threads)
        cleanup()
    return state


def run_threads(cfg: Mapping[str, Any], threads: int | None, *, resumed: bool) -> int:
    """The CPU thread count a run trains with (see :func:`train_run`); warns when a resume changes it."""
    recorded = cfg.get("threads") if resumed else None
    chosen = int(threads) if threads is not None else int(recorded or torch.get_num_threads())
    if chosen < 1:
        raise S2RError(f"--threads {chosen}: at least 1 thread is needed", hint="omit --threads for the default")
    if recorded and chosen != int(recorded):
        warn(f"this run trained with {recorded} CPU threads and resumes with {chosen}: results on a CPU depend "
             f"on the thread count, so it no longer continues bit for bit (omit --threads to keep {recorded})")
    return chosen
