"""Lab2Pix on the demo world: an ablation of V1's components, V2, and sis beside them.

Drives the real CLI through subprocesses (the stages shared with ``sis_demo.py`` are in ``_demo.py``):

1. ``s2r prepare demo`` (if the world is missing);
2. ``s2r segment-eval train-and-test --train demo:W?split=real --test demo:W?split=real_val``:
   the segmenter that judges the generated images (FCN-score), trained on real images;
3. ``s2r train`` for each row, every seed: ``lab2pix-v1`` with every component, then
   without the hierarchical perceptual discriminators (``train.hpd=false``), without the
   foreground-enhancement mask (``train.fe=false``) and without the sharpness loss
   (``train.sharpness=false``); ``lab2pix-v2`` (paired: it trains on the labelled real
   images); ``sis`` for reference. ``--all`` adds V1 without LSCA, DG-Norm, the
   consistency loss and the cycle segmentation loss;
4. ``s2r translate`` from the real_val labels (layouts no run trained on) and from the
   synthetic labels (V1's and sis's training layouts);
5. ``s2r segment-eval score`` of both (mIoU between each generated image and its label)
   and ``s2r fid`` of the real_val-label images against the real images.

Step times are measured apart from the runs, in one process on one thread with the rows
taking turns step by step (so a shared machine's changing load falls on all alike), and are
given as ratios to V1 as well; each run's own mean, from its metrics.jsonl, is in the JSON.
It writes OUT/lab2pix_demo.md, OUT/lab2pix_demo.json, OUT/lab2pix_grid.png (label | real image | V1 | V2 | sis, real_val
labels) and OUT/lab2pix_ablation.png (label | V1 | each ablation).

CPU budget: the defaults (32x64, 300 steps, one seed, six rows, 2 parallel jobs of one thread)
took 35 minutes on a 2-core machine whose load average other work kept at 5-9; the one-thread
step times add up to 20 job-minutes of training, so an idle 2-core machine should need about
15 minutes in all. The demo world is 128x256; read the numbers as a smoke-level ablation, not
as a reproduction of the paper.

Usage::

    python benchmarks/lab2pix_demo.py --out demo_out/lab2pix
    python benchmarks/lab2pix_demo.py --out demo_out/lab2pix --steps 1000 --seeds 0,1 --all

Finished stages are reused when run again with the same --out (--fresh redoes them).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _demo import Demo, demo_arguments  # benchmarks/ is on sys.path when a script here runs
from _stats import fmt

# key, model, title, extra arguments of `s2r train`
ROWS = [
    ("v1", "lab2pix-v1", "V1, every component", []),
    ("v1_no_hpd", "lab2pix-v1", "V1 without HPD (one PatchGAN level per scale, no VGG branch)",
     ["--set", "train.hpd=false"]),
    ("v1_no_fe", "lab2pix-v1", "V1 without the foreground-enhancement mask", ["--set", "train.fe=false"]),
    ("v1_no_sharp", "lab2pix-v1", "V1 without the sharpness loss", ["--set", "train.sharpness=false"]),
    ("v2", "lab2pix-v2", "V2 (paired: trained on the labelled real images)", []),
    ("sis", "sis", "sis, for reference (unpaired, as V1)", []),
]
EXTRA_ROWS = [
    ("v1_no_lsca", "lab2pix-v1", "V1 without LSCA", ["--set", "model_kwargs.lsca=false"]),
    ("v1_no_dgnorm", "lab2pix-v1", "V1 without DG-Norm (SPADE on batch norm)", ["--set", "model_kwargs.dgnorm=false"]),
    ("v1_no_consistency", "lab2pix-v1", "V1 without the consistency loss", ["--set", "train.consistency=false"]),
    ("v1_no_cycle_seg", "lab2pix-v1", "V1 without the cycle segmentation loss", ["--set", "train.cycle_seg=false"]),
]


def mean_step_time(run: Path) -> float | None:
    """Mean seconds per step over the run, leaving out the first logged interval (start-up)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["sec_per_step"] for r in records[1:]] or [r["sec_per_step"] for r in records]
    return sum(times) / len(times) if times else None


def interleaved_step_times(rows: list, spec, size: str, vgg: str, rounds: int = 8) -> dict[str, float]:
    """Median seconds per training step of each row, in this process on one thread, the rows taking
    turns step by step, so that the machine's changing load falls on every row alike.

    A step is what the training loop does: each phase's loss, backward and optimiser step, with the
    networks outside the phase frozen.
    """
    import statistics

    import torch

    from s2rcli.device import DistInfo
    from s2rcli.models import build_task, create_model
    from s2rcli.training.config import parse_size, resolve_config
    from s2rcli.training.runner import open_training_data

    torch.set_num_threads(1)
    tasks = {}
    for key, model, _, extra in rows:
        options = {"data.size": parse_size(size), "train.vgg_weights": vgg, "data.real": spec("real")}
        if model != "lab2pix-v2":
            options["data.synthetic"] = spec("synthetic")
        cfg = resolve_config(model, preset="tiny", sets=extra[1::2], options=options)
        torch.manual_seed(0)
        task = build_task(create_model(model, **cfg["model_kwargs"]), cfg, open_training_data(cfg), DistInfo(),
                          torch.device("cpu"))
        tasks[key] = (task, iter(task.data))
    times: dict[str, list[float]] = {key: [] for key in tasks}
    for step in range(rounds + 1):  # the first round warms up
        for key, (task, batches) in tasks.items():
            batch = next(batches)
            t0 = time.perf_counter()
            for phase in task.phases:
                if step % phase.every:
                    continue
                for name, net in task.nets.items():
                    net.requires_grad_(name in phase.nets)
                optimizer = task.optimizers[phase.optimizer]
                optimizer.zero_grad(set_to_none=True)
                task.loss(phase.name, batch, step)["loss"].backward()
                optimizer.step()
            if step:
                times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(values) for key, values in times.items()}


def picture(label_spec: str, reference: bool, columns: list[Path], out: Path, n: int = 4, zoom: int = 3) -> None:
    """A grid of n label maps: label colours | (the dataset's image) | each folder's generated image."""
    import numpy as np
    from PIL import Image

    from s2rcli.data.datasets import open_dataset
    from s2rcli.data.labels import colorize

    ds = open_dataset(label_spec)
    white = lambda h, w: np.full((h, w, 3), 255, np.uint8)  # noqa: E731
    rows = []
    for i in np.linspace(0, len(ds) - 1, n).round().astype(int):
        name = ds.names[i]
        generated = [np.asarray(Image.open(folder / "images" / f"{name}.png").convert("RGB")) for folder in columns]
        h, w = generated[0].shape[:2]
        tiles = [np.asarray(Image.fromarray(colorize(ds.read_label(i), ds.space)).resize((w, h), Image.NEAREST))]
        if reference:
            tiles.append(np.asarray(Image.fromarray(ds.read_image(i)).resize((w, h), Image.BICUBIC)))
        row = []
        for tile in tiles + generated:
            row += [tile, white(h, 2)]
        rows += [np.concatenate(row[:-1], axis=1), white(2, (w + 2) * len(tiles + generated) - 2)]
    grid = np.concatenate(rows[:-1], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(out)


def main() -> None:
    p = demo_arguments(__doc__.splitlines()[0], "demo_out/lab2pix", "0")
    p.add_argument("--all", action="store_true", help="also the LSCA, DG-Norm, consistency and cycle-seg ablations")
    args = p.parse_args()
    demo = Demo.start(args)  # the world and the judge (FCN-score): a segmenter trained on real images
    out, seeds, run, spec, vgg = demo.out, demo.seeds, demo.run, demo.spec, demo.vgg
    rows = ROWS + (EXTRA_ROWS if args.all else [])
    models = {key: (model, extra) for key, model, _, extra in rows}

    def train(key: str, seed: int) -> None:
        model, extra = models[key]
        data = ["--real", spec("real")]
        if model != "lab2pix-v2":  # V2 trains on the labelled real images alone
            data = ["--synthetic", spec("synthetic"), *data]
        demo.train(f"{key}_s{seed}", model, data, seed, extra)

    def evaluate(key: str, seed: int) -> dict:
        name = f"{key}_s{seed}"

        def compute() -> dict:
            result = {"row": key, "seed": seed, "sec_per_step": mean_step_time(out / "runs" / name)}
            for split in ("real_val", "synthetic"):
                gen, scores = demo.generate_and_score(name, out / "runs" / name, split, seed)
                result[f"miou_{split}"], result[f"acc_{split}"] = scores["miou"], scores["pixel_accuracy"]
                if split == "real_val":
                    result["fid_real"] = demo.fid_vs_real(name, gen)
            return result

        return demo.result(name, compute)

    def train_and_evaluate(item: tuple[str, int]) -> dict:
        train(*item)
        return evaluate(*item)

    # the slowest runs first, so the parallel jobs finish together
    order = sorted(((key, seed) for key, *_ in rows for seed in seeds), key=lambda item: item[0] == "sis")
    with ThreadPoolExecutor(demo.jobs) as pool:
        results = list(pool.map(train_and_evaluate, order))

    timing_path = out / "results" / "step_times.json"
    if not timing_path.exists():
        print(f"[{time.strftime('%H:%M:%S')}] step times, rows in turn on one thread", flush=True)
        timing_path.write_text(json.dumps(interleaved_step_times(rows, spec, args.size, vgg), indent=2))
    step_times = json.loads(timing_path.read_text())

    ref_path = out / "results" / "references.json"
    if not ref_path.exists():
        ref_path.write_text(json.dumps({"real_val_fid": demo.fid_vs_real("real_val", spec("real_val"))}, indent=2))
    refs = json.loads(ref_path.read_text())

    first = seeds[0]
    gen = lambda key: out / "generated" / f"{key}_s{first}" / "real_val"  # noqa: E731
    picture(spec("real_val"), True, [gen("v1"), gen("v2"), gen("sis")], out / "lab2pix_grid.png")
    picture(spec("real_val"), False, [gen(k) for k in ("v1", "v1_no_hpd", "v1_no_fe", "v1_no_sharp")],
            out / "lab2pix_ablation.png")
    for key in ("v1", "v2"):
        samples = sorted((out / "runs" / f"{key}_s{first}" / "samples").glob("step_*.png"))
        if samples:
            shutil.copy(samples[-1], out / f"lab2pix_{key}_samples.png")
    minutes = demo.minutes

    v1_time = step_times["v1"]
    fid_label = "FID vs real" + ("" if demo.inception_pretrained else " (random features)")
    lines = [
        f"Lab2Pix tiny presets on the demo world: {args.steps} steps at {args.size}, seeds {seeds}, VGG "
        f"{'pretrained' if demo.vgg_pretrained else 'random'}; judge: fastseg tiny trained on the real images "
        f"({args.seg_steps} steps; real_val mIoU {100 * demo.oracle['miou']:.1f}). mIoU (FCN-score) in %; "
        "several seeds: mean ± s.d. (per seed).",
        "",
        f"| row | mIoU, real_val labels | mIoU, synthetic labels | {fid_label}, real_val labels "
        "| s/step (one thread) | × V1 |",
        "|---|---|---|---|---|---|",
    ]
    for key, _, title, _ in rows:
        mine = [r for r in results if r["row"] == key]
        col = lambda k, scale=1.0, digits=1, mine=mine: fmt([r[k] for r in mine], scale, digits)  # noqa: E731
        step = step_times[key]
        lines.append(f"| {title} | {col('miou_real_val', 100)} | {col('miou_synthetic', 100)} "
                     f"| {col('fid_real', 1, 3)} | {step:.2f} | {step / v1_time:.2f} |")
    lines.append(f"| reference: the real_val images themselves | {100 * demo.oracle['miou']:.1f} | — "
                 f"| {refs['real_val_fid']:.3f} | — | — |")
    lines += ["", "s/step: the median of 8 steps per row at the training size, batch 2, the rows taking turns "
              "in one process on one thread (interleaved_step_times).",
              f"total {minutes:.1f} min with {demo.jobs} parallel job(s); "
              f"training {run.training_minutes():.1f} job-min"]
    table = "\n".join(lines)
    print("\n" + table)
    (out / "lab2pix_demo.md").write_text(table + "\n")
    (out / "lab2pix_demo.json").write_text(json.dumps(
        {"runs": results, "references": refs, "segmenter": {k: demo.oracle[k] for k in ("miou", "pixel_accuracy")},
         "settings": {**{k: str(v) for k, v in vars(args).items()}, "vgg": vgg, "inception": demo.inception},
         "step_times": step_times, "timings": run.timings, "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
