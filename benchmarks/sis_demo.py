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

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _demo import Demo, demo_arguments, last_metric  # benchmarks/ is on sys.path when a script here runs
from _stats import fmt

VARIANTS = [
    ("full", "full: alignment on 4 patches (config B/E)", []),
    ("no_align", "without the alignment loss", ["--set", "train.loss.align=0"]),
    ("whole_align", "alignment on the whole image (config A)", ["--set", "train.align_patches=1"]),
]


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
    args = demo_arguments(__doc__.splitlines()[0], "demo_out/sis", "0,1").parse_args()
    demo = Demo.start(args)  # the world and the judge: a segmenter trained on real images, tested on real_val
    out, world, seeds, run, spec = demo.out, demo.world, demo.seeds, demo.run, demo.spec
    oracle, vgg, vgg_pretrained, fid_label = demo.oracle, demo.vgg, demo.vgg_pretrained, demo.fid_label

    # -- training: every variant with every seed --
    runs = [(key, seed) for key, _, _ in VARIANTS for seed in seeds]
    flags = {key: extra for key, _, extra in VARIANTS}

    def train(key: str, seed: int) -> None:
        demo.train(f"{key}_s{seed}", "sis", ["--synthetic", spec("synthetic"), "--real", spec("real")], seed,
                   flags[key])

    # -- generation and scoring of one run --
    def evaluate(key: str, seed: int) -> dict:
        name = f"{key}_s{seed}"

        def compute() -> dict:
            folder = out / "runs" / name
            result = {"variant": key, "seed": seed, "final_align": last_metric(folder, "G/align")}
            for split in ("synthetic", "real_val"):
                _, scored = demo.generate_and_score(name, folder, split, seed)
                result[f"miou_{split}"], result[f"acc_{split}"] = scored["miou"], scored["pixel_accuracy"]
            result["fid_real"] = demo.fid_vs_real(name, out / "generated" / name / "synthetic")
            return result

        return demo.result(name, compute)

    def train_and_evaluate(item):
        train(*item)
        return evaluate(*item)

    with ThreadPoolExecutor(demo.jobs) as pool:
        results = list(pool.map(train_and_evaluate, runs))

    # -- references: the synthetic images themselves, and real_val --
    ref_path = out / "results" / "references.json"
    if ref_path.exists():
        refs = json.loads(ref_path.read_text())
    else:
        raw = json.loads(run("score_raw", "segment-eval", "score", "--images", str(world / "synthetic" / "images"),
                             "--labels", spec("synthetic"), "--segmenter", demo.judge, "--size", args.size,
                             "--json"))["scores"]
        fid_raw, fid_val = demo.fid_vs_real("raw", spec("synthetic")), demo.fid_vs_real("real_val", spec("real_val"))
        refs = {"raw_miou": raw["miou"], "raw_acc": raw["pixel_accuracy"], "raw_fid": fid_raw, "real_val_fid": fid_val}
        ref_path.write_text(json.dumps(refs, indent=2))

    variants_image(world, out / "generated", seeds[0], out / "sis_variants.png")
    minutes = demo.minutes

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
    lines += ["", f"total {minutes:.1f} min with {demo.jobs} parallel job(s); "
              f"training {run.training_minutes():.1f} job-min"]
    table = "\n".join(lines)
    print("\n" + table)
    (out / "sis_demo.md").write_text(table + "\n")
    (out / "sis_demo.json").write_text(json.dumps(
        {"runs": results, "references": refs, "segmenter": {k: oracle[k] for k in ("miou", "pixel_accuracy")},
         "settings": {**{k: str(v) for k, v in vars(args).items()}, "vgg": vgg, "inception": demo.inception},
         "timings": run.timings, "minutes": minutes}, indent=2))


if __name__ == "__main__":
    main()
