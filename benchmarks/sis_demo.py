"""sis on the demo world: what does the patch-wise alignment loss buy? (Pragmatic SIS, Table III on a laptop)

Drives the real CLI through subprocesses:

1. ``s2r prepare demo`` (if the world is missing);
2. ``s2r segment-eval train-and-test --train demo:W?split=real --test demo:W?split=real_val``:
   the segmenter that judges alignment, trained on real images with labels;
3. ``s2r train sis --preset tiny`` in three variants, each with every seed:
   ``full`` (alignment on 4 patches, the paper's best), ``no_align``
   (``train.loss.align=0``) and ``whole_align`` (``train.align_patches=1``, Table III config A);
4. ``s2r translate`` from the synthetic labels (the training layouts) and from the
   real_val labels (layouts never seen in training, the paper's "real labels" split);
5. ``s2r segment-eval score`` of both (mIoU between the generated images and the
   labels they came from) and ``s2r fid`` of the synthetic-label images against real.

It prints one table (mean ± sample standard deviation over seeds, then the
per-seed values) and writes OUT/sis_demo.md, OUT/sis_demo.json and
OUT/sis_variants.png (label | synthetic image | one image per variant, seed 0).

CPU budget: the defaults (32x64, 300 steps, 2 seeds, 2 parallel jobs of one
thread each) took 20.9 minutes on a 2-core machine whose load average other work
kept at 6-7 (0.7-1.1 s per training step); training is ~75% of it, so expect
less on idle cores, and scale with --steps, --seeds and --jobs. The demo world
is 128x256; training at 32x64 is what fits the budget, so read the numbers as a
smoke-level ablation, not as a reproduction of the paper.

Without VGG weights (offline) the VGG is random (``--vgg-weights random``) and
without Inception weights FID uses fixed random features; the table says so.

Usage::

    python benchmarks/sis_demo.py --out demo_out/sis
    python benchmarks/sis_demo.py --out demo_out/sis --steps 1000 --seeds 0,1,2 --vgg-weights vgg16-397923af.pth

Finished stages are reused when run again with the same --out (--fresh redoes them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _stats import fmt  # benchmarks/ is on sys.path when a script here runs

VARIANTS = [
    ("full", "full: alignment on 4 patches (config B/E)", []),
    ("no_align", "without the alignment loss", ["--set", "train.loss.align=0"]),
    ("whole_align", "alignment on the whole image (config A)", ["--set", "train.align_patches=1"]),
]


class Runner:
    """Runs ``s2r`` subcommands, logging each to OUT/logs/NAME.log and timing it."""

    def __init__(self, out: Path, device: str, threads: int | None):
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.device, self.threads = device, threads
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, *args: str) -> str:
        cmd = [sys.executable, "-m", "s2rcli", "-q", "--device", self.device, *args]
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)  # parallel jobs: no oversubscribed cores
        print(f"[{time.strftime('%H:%M:%S')}] {name}: s2r {' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        self.timings[name] = round(time.perf_counter() - t0, 1)
        (self.logs / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"{name} failed (exit {proc.returncode}): {' | '.join(tail)}\n"
                             f"log: {self.logs / (name + '.log')}")
        return proc.stdout


def pick_weights(kind: str, choice: str) -> tuple[str, bool]:
    """``(value for the CLI option, pretrained?)``; ``auto`` = the cache, else random, said loudly."""
    from s2rcli.errors import S2RError
    from s2rcli.pretrained import resolve_weights

    if choice == "random":
        return "random", False
    try:
        return str(resolve_weights(kind, None if choice == "auto" else choice, download=choice != "auto")), True
    except S2RError as exc:
        if choice != "auto":
            raise SystemExit(f"error: {exc}")
        print(f"note: no {kind} weights in the cache ({exc.message}); using random ones: "
              "the numbers are not comparable to papers", flush=True)
        return "random", False


def last_metric(run: Path, key: str) -> float | None:
    lines = (run / "metrics.jsonl").read_text().strip().splitlines()
    for line in reversed(lines):
        record = json.loads(line)
        if key in record:
            return float(record[key])
    return None


def variants_image(world: Path, gen: Path, seed: int, out: Path, n: int = 4) -> None:
    """label colours | synthetic image | each variant's image, for n synthetic label maps."""
    import numpy as np
    from PIL import Image

    from s2rcli.data.datasets import open_dataset
    from s2rcli.data.labels import colorize

    ds = open_dataset(f"demo:{world}?split=synthetic")
    rows = []
    for i in np.linspace(0, len(ds) - 1, n).round().astype(int):
        name = ds.names[i]
        tiles = []
        first = np.asarray(Image.open(gen / f"full_s{seed}" / "synthetic" / "images" / f"{name}.png").convert("RGB"))
        size = (first.shape[1], first.shape[0])
        tiles.append(np.asarray(Image.fromarray(colorize(ds.read_label(i), ds.space)).resize(size, Image.NEAREST)))
        tiles.append(np.asarray(Image.fromarray(ds.read_image(i)).resize(size, Image.BICUBIC)))
        for key, _, _ in VARIANTS:
            tiles.append(np.asarray(Image.open(gen / f"{key}_s{seed}" / "synthetic" / "images" / f"{name}.png").convert("RGB")))
        pad = np.full((size[1], 2, 3), 255, np.uint8)
        rows.append(np.concatenate(sum(([t, pad] for t in tiles), [])[:-1], axis=1))
    hpad = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate(sum(([r, hpad] for r in rows), [])[:-1], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo_out/sis"))
    p.add_argument("--world", type=Path, default=None, help="demo world folder (default OUT/world; made if missing)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=300, help="sis training steps per run")
    p.add_argument("--size", default="32x64", help="sis training and generation size; also the segmenter's and FID's")
    p.add_argument("--seg-steps", type=int, default=600)
    p.add_argument("--vgg-weights", default="auto", help="PATH, random, or auto (cache, else random)")
    p.add_argument("--inception-weights", default="auto", help="PATH, random, or auto (cache, else random features)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained and evaluated in parallel (1 thread each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    args = p.parse_args()

    out = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    world = args.world or out / "world"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 2) // jobs) if jobs > 1 else None
    run = Runner(out, args.device, threads)
    vgg, vgg_pretrained = pick_weights("vgg16", args.vgg_weights)
    inception, inception_pretrained = pick_weights("inception-fid", args.inception_weights)
    fid_label = "FID vs real" + ("" if inception_pretrained else " (random features; not comparable to papers)")
    t_start = time.perf_counter()

    if not (world / "manifest.json").exists():
        run("world", "prepare", "demo", "--out", str(world))
    spec = lambda split: f"demo:{world}?split={split}"  # noqa: E731

    # -- the judge: a segmenter trained on real images, tested on real_val --
    seg = out / "segmenter"
    if not (seg / "results.json").exists():
        run("segmenter", "segment-eval", "train-and-test", "--train", spec("real"), "--test", spec("real_val"),
            "--out", str(seg), "--size", args.size, "--steps", str(args.seg_steps), "--overwrite")
    oracle = json.loads((seg / "results.json").read_text())["scores"]
    ckpt = str(seg / "checkpoints" / "latest.pt")

    # -- training: every variant with every seed --
    runs = [(key, seed) for key, _, _ in VARIANTS for seed in seeds]
    flags = {key: extra for key, _, extra in VARIANTS}

    def train(key: str, seed: int) -> None:
        folder = out / "runs" / f"{key}_s{seed}"
        if (folder / "checkpoints" / "latest.pt").exists() and (folder / "done").exists():
            return
        run(f"train_{key}_s{seed}", "train", "sis", "--preset", "tiny", "--synthetic", spec("synthetic"),
            "--real", spec("real"), "--out", str(folder), "--size", args.size, "--steps", str(args.steps),
            "--seed", str(seed), "--vgg-weights", vgg, "--overwrite", "--set", "train.sample_every=100000",
            *flags[key])
        (folder / "done").write_text("ok\n")

    # -- generation and scoring of one run --
    def evaluate(key: str, seed: int) -> dict:
        name = f"{key}_s{seed}"
        result_path = out / "results" / f"{name}.json"
        if result_path.exists():
            return json.loads(result_path.read_text())
        folder = out / "runs" / name
        result = {"variant": key, "seed": seed, "final_align": last_metric(folder, "G/align")}
        for split, labels in (("synthetic", "synthetic"), ("real_val", "real_val")):
            gen = out / "generated" / name / split
            run(f"translate_{name}_{split}", "translate", "--checkpoint", str(folder), "--input", spec(labels),
                "--output", str(gen), "--size", args.size, "--seed", str(seed), "--overwrite")
            scored = json.loads(run(f"score_{name}_{split}", "segment-eval", "score", "--images", str(gen),
                                    "--labels", str(gen), "--segmenter", ckpt, "--json"))["scores"]
            result[f"miou_{split}"], result[f"acc_{split}"] = scored["miou"], scored["pixel_accuracy"]
        fid = json.loads(run(f"fid_{name}", "fid", str(out / "generated" / name / "synthetic"), "--real", spec("real"),
                             "--size", args.size, "--inception-weights", inception, "--json", "--no-cache"))
        result["fid_real"] = fid["results"][0]["fid"]
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(result, indent=2))
        return result

    def train_and_evaluate(item):
        train(*item)
        return evaluate(*item)

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(train_and_evaluate, runs))

    # -- references: the synthetic images themselves, and real_val --
    ref_path = out / "results" / "references.json"
    if ref_path.exists():
        refs = json.loads(ref_path.read_text())
    else:
        raw = json.loads(run("score_raw", "segment-eval", "score", "--images", str(world / "synthetic" / "images"),
                             "--labels", spec("synthetic"), "--segmenter", ckpt, "--size", args.size, "--json"))["scores"]
        fid_raw = json.loads(run("fid_raw", "fid", spec("synthetic"), "--real", spec("real"), "--size", args.size,
                                 "--inception-weights", inception, "--json", "--no-cache"))["results"][0]["fid"]
        fid_val = json.loads(run("fid_real_val", "fid", spec("real_val"), "--real", spec("real"), "--size", args.size,
                                 "--inception-weights", inception, "--json", "--no-cache"))["results"][0]["fid"]
        refs = {"raw_miou": raw["miou"], "raw_acc": raw["pixel_accuracy"], "raw_fid": fid_raw, "real_val_fid": fid_val}
        ref_path.write_text(json.dumps(refs, indent=2))

    variants_image(world, out / "generated", seeds[0], out / "sis_variants.png")
    minutes = (time.perf_counter() - t_start) / 60

    # -- the table --
    header = ("| variant | mIoU, synthetic labels | pixel acc., synthetic labels | mIoU, real_val labels "
              f"| {fid_label} | final G/align |")
    lines = [
        f"sis tiny on the demo world: {args.steps} steps at {args.size}, seeds {seeds}, "
        f"VGG {'pretrained' if vgg_pretrained else 'random'}; segmenter fastseg tiny trained on real "
        f"({args.seg_steps} steps, real_val mIoU {100 * oracle['miou']:.1f}). mIoU and accuracy in %, "
        "mean ± sample s.d. over seeds (per-seed values in brackets).",
        "",
        header,
        "|---|---|---|---|---|---|",
    ]
    for key, title, _ in VARIANTS:
        rows = [r for r in results if r["variant"] == key]
        col = lambda k, scale=1.0, digits=1: fmt([r[k] for r in rows], scale, digits)  # noqa: E731
        lines.append(f"| {title} | {col('miou_synthetic', 100)} | {col('acc_synthetic', 100)} "
                     f"| {col('miou_real_val', 100)} | {col('fid_real', 1, 3)} | {col('final_align', 1, 3)} |")
    lines.append(f"| reference: the synthetic images themselves | {100 * refs['raw_miou']:.1f} "
                 f"| {100 * refs['raw_acc']:.1f} | — | {refs['raw_fid']:.3f} | — |")
    lines.append(f"| reference: real_val images | — | — | {100 * oracle['miou']:.1f} | {refs['real_val_fid']:.3f} | — |")
    lines += ["", f"total {minutes:.1f} min with {jobs} parallel job(s); "
              f"training {sum(v for k, v in run.timings.items() if k.startswith('train_')) / 60:.1f} job-min"]
    table = "\n".join(lines)
    print("\n" + table)
    (out / "sis_demo.md").write_text(table + "\n")
    (out / "sis_demo.json").write_text(json.dumps(
        {"runs": results, "references": refs, "segmenter": {k: oracle[k] for k in ("miou", "pixel_accuracy")},
         "settings": {**{k: str(v) for k, v in vars(args).items()}, "vgg": vgg, "inception": inception},
         "timings": run.timings, "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
