"""Does translation help? The UNIT + smart batch experiment on the demo world, end to end.

Drives the real CLI (``s2r prepare demo/spfeat/pairs``, ``s2r train unit``,
``s2r translate``, ``s2r fid``, ``s2r segment-eval train-and-test``) through
subprocesses and writes one table, as markdown and JSON:

    training set                     -> segmenter tested on real_val
    raw synthetic                       mIoU, pixel accuracy
    UNIT-translated, random pairs       mIoU, share of the raw-to-oracle gap closed, FID vs real / synthetic
    UNIT-translated, --smart-batch      idem
    real with labels (the oracle)       mIoU

Every row is repeated for each seed (UNIT and segmenter seeds alike); the table
shows mean ± sample standard deviation and the per-seed values, and the gap
closed is computed per seed, ``(mIoU_x - mIoU_raw) / (mIoU_oracle - mIoU_raw)``.

FID needs Inception weights. Offline, without them, the script says so and uses
the fixed random-feature extractor instead; the table is then headed
"FID (random features; not comparable to papers)".

Usage::

    python benchmarks/demo_table.py --out demo_out/table                 # defaults: 2 seeds
    python benchmarks/demo_table.py --out demo_out/table --skip-unit     # segmenter rows only
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
        ("unit_smart", "UNIT-translated synthetic, --smart-batch"), ("oracle", "real with labels (oracle)")]


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
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--unit-steps", type=int, default=1000)
    p.add_argument("--seg-steps", type=int, default=600)
    p.add_argument("--seg-size", default="64x128")
    p.add_argument("--unit-size", default="64x128", help="UNIT training size; translation runs at the same size")
    p.add_argument("--fid-size", default="64x128", help="FID resize; the UNIT working size, fair to every set")
    p.add_argument("--inception-weights", default="auto", help="PATH, random, or auto (cache, else random features)")
    p.add_argument("--skip-unit", action="store_true", help="only the raw-synthetic and oracle rows")
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
        run("prepare_demo", "-q", "prepare", "demo", "--out", str(world))
    syn, real, val = (f"demo:{world}?split={s}" for s in ("synthetic", "real", "real_val"))
    weights, fid_heading = choose_fid_weights(args.inception_weights)

    train_sets: dict[tuple[str, int], str] = {}
    fid: dict[tuple[str, int], dict] = {}

    def measure_fid(key: tuple[str, int], images: str) -> None:
        target = out / "fid" / f"{key[0]}_s{key[1]}.json"
        if not target.is_file():
            text = run(f"fid_{key[0]}_s{key[1]}", "-q", "fid", images, "--real", real, "--synthetic", syn,
                       "--size", args.fid_size, "--inception-weights", weights, "--json",
                       "--cache-dir", str(out / "fid_cache"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        result = json.loads(target.read_text())
        fid[key] = {r["reference"]: r["fid"] for r in result["results"]}

    for seed in seeds:
        train_sets[("raw", seed)] = syn
        train_sets[("oracle", seed)] = real
    measure_fid(("raw", 0), syn)
    measure_fid(("oracle", 0), val)  # the floor: held-out real images against the real set

    if not args.skip_unit:
        pairs = out / "pairs.npz"
        if not pairs.is_file():
            run("spfeat_real", "-q", "prepare", "spfeat", real, "--out", str(out / "spfeat_real.npz"), "--overwrite")
            run("spfeat_synthetic", "-q", "prepare", "spfeat", syn, "--out", str(out / "spfeat_synthetic.npz"),
                "--overwrite")
            run("pairs", "-q", "prepare", "pairs", "--real", str(out / "spfeat_real.npz"), "--synthetic",
                str(out / "spfeat_synthetic.npz"), "--out", str(pairs), "--overwrite")
        for seed in seeds:
            for mode in ("random", "smart"):
                name = f"unit_{mode}"
                unit_run = out / f"{name}_s{seed}"
                translated = out / f"translated_{mode}_s{seed}"
                if not (translated / "manifest.json").is_file():
                    extra = ["--smart-batch", "--pairs", str(pairs)] if mode == "smart" else []
                    run(f"train_{name}_s{seed}", "-q", "train", "unit", "--preset", "tiny", "--synthetic", syn,
                        "--real", real, "--out", str(unit_run), "--steps", str(args.unit_steps), "--seed", str(seed),
                        "--size", args.unit_size,
                        "--overwrite", *extra)
                    run(f"translate_{name}_s{seed}", "-q", "translate", "--checkpoint", str(unit_run), "--input", syn,
                        "--output", str(translated), "--size", args.unit_size, "--batch-size", "16", "--overwrite")
                train_sets[(name, seed)] = f"folder:{translated}"
                measure_fid((name, seed), str(translated))

    results: dict[tuple[str, int], dict] = {}
    for (row, seed), spec in sorted(train_sets.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seg_run = out / f"seg_{row}_s{seed}"
        if not (seg_run / "results.json").is_file():
            run(f"seg_{row}_s{seed}", "-q", "segment-eval", "train-and-test", "--train", spec, "--test", val,
                "--model", "fastseg", "--preset", "tiny", "--steps", str(args.seg_steps), "--size", args.seg_size,
                "--seed", str(seed), "--out", str(seg_run), "--overwrite")
        results[(row, seed)] = json.loads((seg_run / "results.json").read_text())

    # --- the table ---------------------------------------------------------------------------------
    def miou(row: str, seed: int) -> float | None:
        r = results.get((row, seed))
        return None if r is None else r["scores"]["miou"]

    present = [key for key, _ in ROWS if any((key, s) in results for s in seeds)]
    table_rows, payload_rows = [], []
    for key, title in ROWS:
        if key not in present:
            continue
        mious = [miou(key, s) for s in seeds]
        accs = [results[(key, s)]["scores"]["pixel_accuracy"] for s in seeds]
        gaps = []
        for s in seeds:
            raw, oracle, x = miou("raw", s), miou("oracle", s), miou(key, s)
            if None not in (raw, oracle, x) and oracle != raw:
                gaps.append((x - raw) / (oracle - raw))
        fid_seeds = [s for s in seeds if (key, s) in fid] or [0]
        fid_real = [fid[(key, s)]["real"] for s in fid_seeds if (key, s) in fid]
        fid_syn = [fid[(key, s)]["synthetic"] for s in fid_seeds if (key, s) in fid]
        fid_note = "" if key.startswith("unit") else (" †" if key == "raw" else " ‡")
        table_rows.append(
            f"| {title} | {fmt(mious, 100)} | {fmt(accs, 100)} | {fmt(gaps, 100) if key.startswith('unit') else '—'} | "
            f"{fmt(fid_real, 1.0, 2)}{fid_note} | {fmt(fid_syn, 1.0, 2)}{fid_note} |"
        )
        payload_rows.append({"row": key, "title": title, "miou": mious, "pixel_accuracy": accs, "gap_closed": gaps,
                             "fid_vs_real": fid_real, "fid_vs_synthetic": fid_syn,
                             "per_class_iou": {s: results[(key, s)]["scores"]["per_class_iou"] for s in seeds}})

    from s2rcli.data.labels import get_label_space

    classes = get_label_space(results[(present[0], seeds[0])]["label_space"]).class_names  # in class-id order
    class_lines = ["| class | " + " | ".join(t for k, t in ROWS if k in present) + " |",
                   "|---|" + "---|" * len(present)]
    for name in classes:
        cells = []
        for key in present:
            values = [results[(key, s)]["scores"]["per_class_iou"][name] for s in seeds]
            values = [v for v in values if v is not None]
            cells.append(f"{100 * sum(values) / len(values):.1f}" if values else "—")
        class_lines.append(f"| {name} | " + " | ".join(cells) + " |")

    elapsed = time.perf_counter() - t_start
    md = [
        f"## Demo world: segmenter trained on X, tested on real_val ({len(seeds)} seeds: {', '.join(map(str, seeds))})",
        "",
        f"fastseg tiny, {args.seg_steps} steps at {args.seg_size}; UNIT tiny, {args.unit_steps} steps; "
        f"{fid_heading}, all sets resized to {args.fid_size}.",
        "Values: mean ± sample sd (per seed).",
        "",
        f"| training set | mIoU % | pixel acc % | gap closed % | {fid_heading} vs real | vs synthetic |",
        "|---|---|---|---|---|---|",
        *table_rows,
        "",
        "† the raw synthetic images themselves. ‡ real_val against real: the floor for same-domain images.",
        "",
        "### Per-class IoU % (mean over seeds)",
        "",
        *class_lines,
        "",
        f"Total time {elapsed / 60:.1f} min; stage timings in demo_table.json.",
    ]
    (out / "demo_table.md").write_text("\n".join(md) + "\n")
    (out / "demo_table.json").write_text(json.dumps({
        "seeds": seeds, "seg_steps": args.seg_steps, "seg_size": args.seg_size, "unit_steps": args.unit_steps,
        "fid_size": args.fid_size, "fid": fid_heading, "inception_weights": weights, "rows": payload_rows,
        "timings_s": run.timings, "total_s": round(elapsed, 1),
    }, indent=2) + "\n")
    print("\n".join(md))
    print(f"\nwrote {out / 'demo_table.md'} and {out / 'demo_table.json'}")


if __name__ == "__main__":
    main()
