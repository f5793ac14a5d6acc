"""SAIT's ablation (the paper's Table 3) on the demo world, plus SAIT's step time against UNIT's.

Drives the real CLI (``s2r prepare demo``, ``s2r segment-eval train-and-test``,
``s2r train sait``, ``s2r translate``, ``s2r train adapt``, ``s2r segment-eval
test``) through subprocesses, for each seed:

    raw        fastseg trained on raw synthetic images; it is also M, the segmenter SAIT builds on
    oracle     fastseg trained on real images with their labels
    UNIT       SAIT's translator without SPADE and without SCE (model_kwargs.spade=false, train.loss.sce=0),
               then fastseg trained on its translations
    +SPADE     the same with SPADE decoder blocks guided by M (train.loss.sce=0)
    +SCE       the full translator: SPADE and the SCE term
    +adapt     M adapted by `s2r train adapt` on the +SCE translations and pseudo-labelled real images

Every row is tested on real_val; "gap closed" is ``(mIoU - raw) / (oracle - raw)``
per seed. Then, in this process, the seconds per training step of ``sait``
against ``unit`` at the same size (tiny preset, batch 1), interleaved round by
round so load changes hit both alike.

Defaults fit about 20 minutes on one CPU thread (tiny presets, 64x128, 300 translator
steps, 400 segmenter steps, 200 adaptation steps, 2 seeds): small, so the numbers
are a smoke test of the method on a toy world, not a reproduction of the paper.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sait_table.py --out demo_out/sait
    python benchmarks/sait_table.py --out demo_out/sait --device cuda --sait-steps 2000

Finished stages are reused when the script runs again with the same --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from _stats import fmt  # benchmarks/ is on sys.path when a script here runs
from demo_table import Runner as DemoRunner

VARIANTS = {  # row -> --set overrides of `s2r train sait`
    "unit": ["model_kwargs.spade=false", "train.loss.sce=0"],
    "spade": ["train.loss.sce=0"],
    "sce": [],
}
ROWS = [("raw", "raw synthetic"), ("unit", "UNIT (sait: spade=false, sce=0)"), ("spade", "+SPADE (sce=0)"),
        ("sce", "+SCE (full SAIT translator)"), ("adapt", "+adaptation (M adapted on the +SCE translations)"),
        ("oracle", "real with labels (oracle)")]


class Runner(DemoRunner):
    """demo_table's runner (each stage logged to OUT/logs/NAME.log and timed), quiet, and keeping each
    stage's seconds in OUT/logs/NAME.seconds, so repeated or parallel invocations add up."""

    def __init__(self, out: Path, device: str):
        super().__init__(out, device)
        for record in self.logs.glob("*.seconds"):
            self.timings[record.stem] = float(record.read_text())

    def __call__(self, name: str, *args: str) -> str:
        text = super().__call__(name, "-q", *args)
        (self.logs / f"{name}.seconds").write_text(f"{self.timings[name]}\n")
        return text


def run_table(args, out: Path, run: Runner) -> dict:
    world = args.world or out / "world"
    if not (world / "manifest.json").is_file():
        run("prepare_demo", "prepare", "demo", "--out", str(world))
    syn, real, val = (f"demo:{world}?split={s}" for s in ("synthetic", "real", "real_val"))
    size = ["--size", args.size]
    results: dict[tuple[str, int], dict] = {}

    def train_and_test(row: str, seed: int, spec: str) -> Path:
        seg = out / f"seg_{row}_s{seed}"
        if not (seg / "results.json").is_file():
            run(f"seg_{row}_s{seed}", "segment-eval", "train-and-test", "--train", spec, "--test", val, "--model",
                "fastseg", "--preset", "tiny", "--steps", str(args.seg_steps), *size, "--seed", str(seed),
                "--out", str(seg), "--overwrite")
        results[(row, seed)] = json.loads((seg / "results.json").read_text())
        return seg

    for seed in args.seeds:
        segmenter = train_and_test("raw", seed, syn)  # M: the segmenter a SAIT translator builds on
        train_and_test("oracle", seed, real)
        for row, sets in VARIANTS.items():
            translated = out / f"translated_{row}_s{seed}"
            if not (translated / "manifest.json").is_file():
                sait = out / f"sait_{row}_s{seed}"
                run(f"sait_{row}_s{seed}", "train", "sait", "--preset", "tiny", "--synthetic", syn, "--real", real,
                    "--segmenter", str(segmenter), "--steps", str(args.sait_steps), *size, "--seed", str(seed),
                    "--out", str(sait), "--overwrite", *[a for s in sets for a in ("--set", s)])
                run(f"translate_{row}_s{seed}", "translate", "--checkpoint", str(sait), "--input", syn, "--output",
                    str(translated), *size, "--batch-size", "16", "--overwrite")
            train_and_test(row, seed, f"folder:{translated}")
        adapted = out / f"adapt_s{seed}"
        test_json = adapted / "test.json"
        if not test_json.is_file():
            run(f"adapt_s{seed}", "train", "adapt", "--preset", "tiny", "--source", f"folder:{out / f'translated_sce_s{seed}'}",
                "--real", real, "--segmenter", str(segmenter), "--steps", str(args.adapt_steps), *size,
                "--seed", str(seed), "--out", str(adapted), "--overwrite")
            test_json.write_text(run(f"test_adapt_s{seed}", "segment-eval", "test", "--segmenter", str(adapted),
                                     "--test", val, "--json"))
        results[("adapt", seed)] = json.loads(test_json.read_text())
        results[("adapt", seed)]["pseudo_labels"] = json.loads((adapted / "pseudo_labels" / "report.json").read_text())
    return {"results": results, "world": str(world)}


def step_times(args, segmenter: Path, world: Path) -> dict:
    """Median seconds per training step of unit, sait and the UNIT-like sait, interleaved."""
    import torch

    from s2rcli.data.datasets import open_dataset
    from s2rcli.device import DistInfo, resolve_device
    from s2rcli.models import build_task, create_model
    from s2rcli.training.config import parse_size, preset_defaults

    device = resolve_device(args.device)
    h, w = parse_size(args.size)
    data = {"synthetic": open_dataset(f"demo:{world}?split=synthetic"), "real": open_dataset(f"demo:{world}?split=real")}
    variants = {"unit": ("unit", {}), "sait": ("sait", {}), "sait_unit_like": ("sait", {"spade": False, "sce": 0.0})}
    tasks = {}
    for name, (model_name, switch) in variants.items():
        cfg = preset_defaults(model_name, "tiny")
        cfg["data"].update(synthetic="demo", real="demo", size=[h, w])
        if model_name == "sait":
            cfg["train"]["segmenter"] = str(segmenter)
            cfg["model_kwargs"]["spade"] = switch.get("spade", True)
            cfg["train"]["loss"]["sce"] = switch.get("sce", cfg["train"]["loss"]["sce"])
        torch.manual_seed(0)
        task = build_task(create_model(model_name, **cfg["model_kwargs"]), cfg, data, DistInfo(), device)
        for net in task.nets.values():
            net.to(device)
        tasks[name] = (task, iter(task.data))
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for r in range(args.timing_rounds + 1):  # round 0 warms up
        for name, (task, batches) in tasks.items():
            for _ in range(args.timing_steps):
                batch = task.to_device(next(batches), device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for phase in task.phases:
                    opt = task.optimizers[phase.optimizer]
                    opt.zero_grad(set_to_none=True)
                    task.loss(phase.name, batch, 0)["loss"].backward()
                    opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if r:
                    times[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(v) for name, v in times.items()}
    return {"device": str(device), "threads": torch.get_num_threads(), "size": [h, w], "steps_each": len(times["unit"]),
            "seconds_per_step": median, "ratio_to_unit": {n: median[n] / median["unit"] for n in median}}


def translation_figure(out: Path, world: Path, seed: int, n: int = 4) -> Path | None:
    """``OUT/sait_translations.png``: a few synthetic images (rows) as raw | UNIT | +SPADE | +SCE translations."""
    from PIL import Image

    folders = [world / "synthetic" / "images"] + [out / f"translated_{row}_s{seed}" / "images" for row in VARIANTS]
    if not all(f.is_dir() for f in folders):
        return None
    names = sorted(p.name for p in folders[1].glob("*.png"))[:: max(1, len(list(folders[1].glob("*.png"))) // n)][:n]
    tiles = [[Image.open(next(folder.glob(Path(name).stem + ".*"))).convert("RGB") for folder in folders] for name in names]
    h, w = tiles[0][1].height, tiles[0][1].width
    sheet = Image.new("RGB", (len(folders) * (w + 2), len(names) * (h + 2)), "white")
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            sheet.paste(tile.resize((w, h), Image.Resampling.BICUBIC), (c * (w + 2), r * (h + 2)))
    path = out / "sait_translations.png"
    sheet.save(path)
    return path


def write_report(args, out: Path, table: dict, timing: dict | None, run: Runner, elapsed: float) -> None:
    results, seeds = table["results"], args.seeds

    def miou(row: str, seed: int) -> float | None:
        r = results.get((row, seed))
        return None if r is None else r["scores"]["miou"]

    lines, payload = [], []
    for key, title in ROWS:
        mious = [miou(key, s) for s in seeds]
        gaps = []
        for s in seeds:
            raw, oracle, x = miou("raw", s), miou("oracle", s), miou(key, s)
            if None not in (raw, oracle, x) and oracle != raw:
                gaps.append((x - raw) / (oracle - raw))
        shown_gap = fmt(gaps, 100) if key not in ("raw", "oracle") else "—"
        lines.append(f"| {title} | {fmt(mious, 100)} | {shown_gap} |")
        payload.append({"row": key, "title": title, "miou": mious, "gap_closed": gaps})
    kept = [results[("adapt", s)]["pseudo_labels"]["kept_share"] for s in seeds]
    md = [
        f"## SAIT ablation on the demo world: fastseg tested on real_val ({len(seeds)} seeds: "
        f"{', '.join(map(str, seeds))})",
        "",
        f"Tiny presets at {args.size}: translators {args.sait_steps} steps, fastseg {args.seg_steps} steps, "
        f"adaptation {args.adapt_steps} steps; device {args.device}. Values: mean ± sample sd (per seed).",
        "",
        "| training set / model | mIoU % | gap closed % |",
        "|---|---|---|",
        *lines,
        "",
        f"Pseudo-labels (confidence ≥ 0.9) kept {fmt(kept, 100)} % of the real pixels.",
    ]
    if timing:
        sps, ratio = timing["seconds_per_step"], timing["ratio_to_unit"]
        md += ["", f"### Seconds per training step ({timing['device']}, {timing['threads']} thread(s), "
                   f"{timing['size'][0]}x{timing['size'][1]}, batch 1, median of {timing['steps_each']} interleaved steps)",
               "", "| model | s/step | × unit |", "|---|---|---|"]
        md += [f"| {name} | {sps[name]:.3f} | {ratio[name]:.2f} |" for name in ("unit", "sait", "sait_unit_like")]
    stages = sum(run.timings.values())
    md += ["", f"Stages took {stages / 60:.1f} min in all (each stage's seconds in sait_table.json); this "
               f"invocation {elapsed / 60:.1f} min."]
    (out / "sait_table.md").write_text("\n".join(md) + "\n")
    (out / "sait_table.json").write_text(json.dumps({
        "seeds": seeds, "size": args.size, "sait_steps": args.sait_steps, "seg_steps": args.seg_steps,
        "adapt_steps": args.adapt_steps, "device": args.device, "rows": payload, "pseudo_labels_kept": kept,
        "timing": timing, "timings_s": run.timings, "total_s": round(elapsed, 1),
    }, indent=2) + "\n")
    print("\n".join(md))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo_out/sait"))
    p.add_argument("--world", type=Path, default=None, help="demo world folder (default OUT/world; made if missing)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--size", default="64x128", help="training, translation and test size")
    p.add_argument("--sait-steps", type=int, default=300)
    p.add_argument("--seg-steps", type=int, default=400)
    p.add_argument("--adapt-steps", type=int, default=200)
    p.add_argument("--timing-steps", type=int, default=5, help="steps per model and round in the step-time part")
    p.add_argument("--timing-rounds", type=int, default=4)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--timing-only", action="store_true",
                   help="only the step-time part (needs OUT/seg_raw_sN from an earlier run); writes OUT/timing_DEVICE.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    args = p.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Runner(out, args.device)
    t0 = time.perf_counter()
    if args.timing_only:
        timing = step_times(args, out / f"seg_raw_s{args.seeds[0]}", args.world or out / "world")
        (out / f"timing_{args.device.split(':')[0]}.json").write_text(json.dumps(timing, indent=2) + "\n")
        print(json.dumps(timing, indent=2))
        return
    table = run_table(args, out, run)
    translation_figure(out, Path(table["world"]), args.seeds[0])
    timing = None
    if not args.skip_timing:
        timing = step_times(args, out / f"seg_raw_s{args.seeds[0]}", Path(table["world"]))
    write_report(args, out, table, timing, run, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
