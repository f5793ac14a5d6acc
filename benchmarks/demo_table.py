"""Does translation help? UNIT with random pairs and with the smart batch, on a demo world, end to end.

Drives the real CLI through subprocesses (``s2r prepare``, ``s2r train unit
--preset cpu``, ``s2r translate --segmenter``, ``s2r fid`` and ``s2r
segment-eval compare``) and writes one table, as markdown and JSON:

    training set                     -> segmenter tested on real_val
    raw synthetic                       mIoU, content mIoU, FID vs real / synthetic
    UNIT-translated, random pairs       mIoU, share of the raw-to-real gap closed, content mIoU, FID
    UNIT-translated, --smart-batch      idem
    real with labels (the oracle)       mIoU

For each seed, the oracle segmenter (trained on the labelled real images) is
trained first: it scores the content the translations keep (its mIoU on them
against the synthetic labels) and is the "real" row of ``segment-eval
compare``, which then trains the same segmenter on raw and on both
translations. The table shows mean ± sample standard deviation over seeds and
the per-seed values; the gap closed is computed per seed.

FID needs Inception weights. Offline, without them, the script says so and uses
the fixed random-feature extractor instead; the table is then headed
"FID (random features; not comparable to papers)".

Usage::

    python benchmarks/demo_table.py --out demo_out/table                     # street world, seeds 0,1
    python benchmarks/demo_table.py --out demo_out/table_dusk --style dusk   # the validation world
    python benchmarks/demo_table.py --out demo_out/table --inception-weights weights-inception-2015-12-05-6726825d.pth

Finished stages are reused when the script is run again with the same --out
(delete a stage's folder to redo it; --fresh redoes everything).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _stats import fmt  # benchmarks/ is on sys.path when a script here runs

ROWS = [("raw", "raw synthetic"), ("unit_random", "UNIT-translated synthetic, random pairs"),
        ("unit_smart", "UNIT-translated synthetic, --smart-batch"), ("real", "real with labels (oracle)")]


class Runner:
    """Runs ``s2r`` subcommands, logging each to OUT/logs/NAME.log and timing it."""

    def __init__(self, out: Path, device: str):
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, *args: str) -> str:
        cmd = [sys.executable, "-m", "s2rcli", "--device", self.device, *args]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: s2r {' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        self.timings[name] = round(time.perf_counter() - t0, 1)
        (self.logs / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"{name} failed (exit {proc.returncode}): {' | '.join(tail)}\nlog: {self.logs / (name + '.log')}")
        print(f"    done in {self.timings[name]:.0f} s", flush=True)
        return proc.stdout


def choose_fid_weights(choice: str) -> tuple[str, str]:
    """``(value for --inception-weights, heading)``; falls back to random features, loudly."""
    from s2rcli.errors import S2RError
    from s2rcli.pretrained import resolve_weights

    if choice == "random":
        return "random", "FID (random features; not comparable to papers)"
    try:
        path = resolve_weights("inception-fid", None if choice == "auto" else choice)
        return str(path), "FID (Inception-v3, torch-fidelity)"
    except S2RError as exc:
        if choice != "auto":
            raise SystemExit(f"error: {exc}")
        print(f"note: no Inception weights ({exc.message}); FID falls back to fixed random features, "
              "which are NOT comparable to published FIDs", flush=True)
        return "random", "FID (random features; not comparable to papers)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo_out/table"))
    p.add_argument("--world", type=Path, default=None, help="demo world folder (default OUT/world; made if missing)")
    p.add_argument("--style", default="street", help="world style when the world is made here: street or dusk")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--preset", default="cpu", help="UNIT preset (the CPU recipe by default)")
    p.add_argument("--unit-steps", type=int, default=None, help="UNIT steps (default: the preset's)")
    p.add_argument("--seg-steps", type=int, default=600)
    p.add_argument("--size", default="64x128", help="UNIT, translation, segmenter and FID size")
    p.add_argument("--inception-weights", default="auto", help="PATH, random, or auto (cache, else random features)")
    p.add_argument("--device", default="auto")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    args = p.parse_args()

    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    world = args.world or out / "world"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    run = Runner(out, args.device)
    t_start = time.perf_counter()

    if not (world / "manifest.json").is_file():
        run("prepare_demo", "-q", "prepare", "demo", "--out", str(world), "--style", args.style)
    syn, real, val = (f"demo:{world}?split={s}" for s in ("synthetic", "real", "real_val"))
    weights, fid_heading = choose_fid_weights(args.inception_weights)
    seg = ["--model", "fastseg", "--preset", "tiny", "--steps", str(args.seg_steps), "--size", args.size]
    unit_steps = ["--steps", str(args.unit_steps)] if args.unit_steps else []

    pairs = out / "pairs.npz"
    if not pairs.is_file():
        for split in ("real", "synthetic"):
            run(f"spfeat_{split}", "-q", "prepare", "spfeat", f"demo:{world}?split={split}", "--out",
                str(out / f"spfeat_{split}.npz"), "--overwrite")
        run("pairs", "-q", "prepare", "pairs", "--real", str(out / "spfeat_real.npz"), "--synthetic",
            str(out / "spfeat_synthetic.npz"), "--out", str(pairs), "--overwrite")

    fid: dict[tuple[str, int], dict[str, float]] = {}

    def measure_fid(key: tuple[str, int], images: str) -> None:
        target = out / "fid" / f"{key[0]}_s{key[1]}.json"
        if not target.is_file():
            text = run(f"fid_{key[0]}_s{key[1]}", "-q", "fid", images, "--real", real, "--synthetic", syn,
                       "--size", args.size, "--inception-weights", weights, "--json",
                       "--cache-dir", str(out / "fid_cache"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        fid[key] = {r["reference"]: r["fid"] for r in json.loads(target.read_text())["results"]}

    measure_fid(("raw", 0), syn)
    measure_fid(("real", 0), val)  # the floor: held-out real images against the real set
    compared: dict[int, dict] = {}
    content: dict[tuple[str, int], dict] = {}
    for seed in seeds:
        cmp_dir = out / f"compare_s{seed}"
        oracle = cmp_dir / f"real_s{seed}"      # compare's oracle row, trained first: it scores content too
        if not (oracle / "results.json").is_file():
            run(f"seg_real_s{seed}", "-q", "segment-eval", "train-and-test", "--train", real, "--test", val,
                "--out", str(oracle), "--seed", str(seed), "--overwrite", *seg)
        translated = {}
        for mode, extra in (("random", []), ("smart", ["--smart-batch", "--pairs", str(pairs)])):
            name, unit_run, folder = f"unit_{mode}", out / f"unit_{mode}_s{seed}", out / f"translated_{mode}_s{seed}"
            if not (folder / "content.json").is_file():
                run(f"train_{name}_s{seed}", "-q", "train", "unit", "--preset", args.preset, "--synthetic", syn,
                    "--real", real, "--out", str(unit_run), "--seed", str(seed), "--size", args.size, *unit_steps,
                    "--overwrite", *extra)
                run(f"translate_{name}_s{seed}", "-q", "translate", "--checkpoint", str(unit_run), "--input", syn,
                    "--output", str(folder), "--size", args.size, "--batch-size", "16",
                    "--segmenter", str(oracle / "checkpoints" / "latest.pt"), "--overwrite")
            scores = json.loads((folder / "content.json").read_text())
            content[(name, seed)], content[("raw", seed)] = scores["translated"], scores["raw"]
            translated[name] = folder
            measure_fid((name, seed), str(folder))
        run(f"compare_s{seed}", "-q", "segment-eval", "compare", "--synthetic", syn, "--real-train", real,
            "--test", val, "--out", str(cmp_dir), "--seeds", str(seed), *seg,
            *[a for name, folder in translated.items() for a in ("--translated", f"{name}=folder:{folder}")])
        compared[seed] = {row["name"]: row for row in json.loads((cmp_dir / "compare.json").read_text())["rows"]}

    md, payload = render(compared, content, fid, seeds, args, fid_heading, time.perf_counter() - t_start)
    (out / "demo_table.md").write_text("\n".join(md) + "\n")
    payload.update({"inception_weights": weights, "timings_s": run.timings})
    (out / "demo_table.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(md))
    print(f"\nwrote {out / 'demo_table.md'} and {out / 'demo_table.json'}")


def render(compared: dict[int, dict], content: dict, fid: dict, seeds: list[int], args, fid_heading: str,
           elapsed: float) -> tuple[list[str], dict]:
    """The markdown table (lines) and its JSON payload."""
    table_rows, payload_rows = [], []
    for key, title in ROWS:
        mious = [compared[s][key]["miou_mean"] for s in seeds]
        gaps = [compared[s][key]["gap_closed_mean"] for s in seeds if compared[s][key]["gap_closed_mean"] is not None]
        cont = [content[(key, s)]["miou"] for s in seeds if (key, s) in content]
        fid_real = [fid[(key, s)]["real"] for s in seeds if (key, s) in fid]
        fid_syn = [fid[(key, s)]["synthetic"] for s in seeds if (key, s) in fid]
        note = " †" if key == "raw" else (" ‡" if key == "real" else "")
        is_unit = key.startswith("unit")
        table_rows.append(f"| {title} | {fmt(mious, 100)} | {fmt(gaps, 100) if is_unit else '—'} | "
                          f"{fmt(cont, 100) if cont else '—'} | {fmt(fid_real, 1.0, 2)}{note} | "
                          f"{fmt(fid_syn, 1.0, 2)}{note} |")
        payload_rows.append({"row": key, "title": title, "miou": mious, "gap_closed": gaps, "content_miou": cont,
                             "fid_vs_real": fid_real, "fid_vs_synthetic": fid_syn,
                             "per_class_iou": {s: compared[s][key]["per_class_iou"] for s in seeds},
                             "content_per_class_iou": {s: content[(key, s)]["per_class_iou"] for s in seeds
                                                       if (key, s) in content}})
    from s2rcli.data.labels import get_label_space

    classes = get_label_space("cityscapes19").class_names  # in class-id order
    class_lines = ["| class | " + " | ".join(t if k == "real" else f"{t} (mIoU / content)" for k, t in ROWS) + " |",
                   "|---|" + "---|" * len(ROWS)]
    for name in classes:
        cells = []
        for key, _ in ROWS:
            seg_v = [v for s in seeds if (v := compared[s][key]["per_class_iou"].get(name)) is not None]
            con_v = [v for s in seeds if (key, s) in content
                     and (v := content[(key, s)]["per_class_iou"].get(name)) is not None]
            mean = (lambda vs: f"{100 * sum(vs) / len(vs):.1f}" if vs else "—")
            cells.append(f"{mean(seg_v)} / {mean(con_v)}" if key != "real" else mean(seg_v))
        class_lines.append(f"| {name} | " + " | ".join(cells) + " |")
    steps = f"{args.unit_steps} steps" if args.unit_steps else "the preset's steps"
    md = [
        f"## Segmenter trained on X, tested on real_val ({len(seeds)} seeds: {', '.join(map(str, seeds))})",
        "",
        f"fastseg tiny, {args.seg_steps} steps at {args.size}; UNIT `--preset {args.preset}`, {steps}; "
        f"content = the real-trained segmenter's mIoU on the images against the synthetic labels; "
        f"{fid_heading}, all sets resized to {args.size}. Values: mean ± sample sd (per seed).",
        "",
        f"| training set | mIoU % | gap closed % | content mIoU % | {fid_heading} vs real | vs synthetic |",
        "|---|---|---|---|---|---|",
        *table_rows,
        "",
        "† the raw synthetic images themselves. ‡ real_val against real: the floor for same-domain images.",
        "",
        "### Per-class IoU % (mean over seeds): segmenter on real_val / content",
        "",
        *class_lines,
        "",
        f"Total time {elapsed / 60:.1f} min; stage timings in demo_table.json.",
    ]
    payload = {"seeds": seeds, "seg_steps": args.seg_steps, "size": args.size, "preset": args.preset,
               "unit_steps": args.unit_steps, "fid": fid_heading, "rows": payload_rows, "total_s": round(elapsed, 1)}
    return md, payload


if __name__ == "__main__":
    main()
