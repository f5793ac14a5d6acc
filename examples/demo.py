"""The whole s2r pipeline on the embedded demo world (what `make demo` runs).

Each step is the real `s2r` command a user would type, echoed before it runs:

1. write the demo world (synthetic images with labels, real images, a labelled
   real validation split) and pair the two domains by SP-Feat;
2. train a small segmenter on the labelled real images: it scores how much of
   the synthetic labels survives translation (content preservation), and it is
   the "real" (oracle) row of the downstream comparison;
3. train UNIT with the CPU recipe (`--preset cpu`) and the smart batch loader;
4. translate the synthetic set, scoring content on the way;
5. FID of raw and translated synthetic images against the real ones;
6. (unless --no-downstream) train the same segmenter on raw and on translated
   images and test both on real images.

It ends with one table, raw synthetic vs translated, that says which is better
on each measure. Finished steps are skipped when the demo is run again with the
same --out (delete a step's output to redo it, or pass --fresh).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

SEG_STEPS = 600       # the segmenters (fastseg, tiny preset): content scorer, raw, translated, real
SIZE = "64x128"       # UNIT's training size in the CPU recipe; segmenters and FID use it too


def run(cmd: list[str], capture: bool = False) -> str:
    """Echo and run one s2r command; stop the demo with its exit code when it fails."""
    print(f"\n$ s2r {shlex.join(cmd[3:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode}): s2r {shlex.join(cmd[3:])}")
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return proc.stdout or ""


def inception_choice() -> str:
    """The real FID Inception when it is cached or downloadable; otherwise fixed random features, said loudly."""
    from s2rcli.errors import S2RError
    from s2rcli.pretrained import resolve_weights

    try:
        return str(resolve_weights("inception-fid"))
    except S2RError as exc:
        print(f"\nnote: {exc.one_line()}\n      FID below uses fixed random features: fine for comparing raw with "
              "translated in this demo, not comparable to published numbers.")
        return "random"


def run_state(run_dir: Path, steps: int | None = None) -> str:
    """``missing``, ``stopped`` (a checkpoint short of ``steps``, default the run's own) or ``finished``."""
    from s2rcli.checkpoint import load_checkpoint

    latest = run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file():
        return "missing"
    target = steps or json.loads((run_dir / "config.json").read_text())["train"]["steps"]
    return "finished" if load_checkpoint(latest).get("step", 0) >= target else "stopped"


def summary_rows(fid: dict[str, float], content: dict, downstream: dict | None) -> list[tuple[str, str, str, str]]:
    """``(measure, raw, translated, verdict)`` rows of the closing table."""
    rows = []

    def add(measure: str, raw: float, translated: float, higher_is_better: bool, fmt: str) -> None:
        better = translated > raw if higher_is_better else translated < raw
        rows.append((measure, fmt.format(raw), fmt.format(translated),
                     "translated is better" if better else "raw is better (translation hurts here)"))

    add("FID vs real images (lower is better)", fid["raw"], fid["translated"], False, "{:.3f}")
    add("content mIoU % (higher is better)", 100 * content["raw"]["miou"], 100 * content["translated"]["miou"],
        True, "{:.1f}")
    if downstream is not None:
        by_name = {row["name"]: row for row in downstream["rows"]}
        raw, unit, real = (100 * by_name[n]["miou_mean"] for n in ("raw", "unit", "real"))
        gap = by_name["unit"]["gap_closed_mean"]
        add(f"segmenter mIoU % on real_val (higher is better; real-trained: {real:.1f})", raw, unit, True, "{:.1f}")
        if gap is not None:
            rows.append(("share of the raw-to-real gap closed", "0%", f"{100 * gap:.0f}%", ""))
    return rows


def translation_grid(inputs: Path, translated: Path, out: Path, rows: int = 6, scale: int = 1) -> Path:
    """Input | translated, side by side, for the first ``rows`` images of ``translated`` (same file names).

    Inputs are resized to the translations' size; ``scale`` enlarges both (nearest neighbour) for viewing.
    """
    from PIL import Image

    names = sorted(p.name for p in (translated / "images").glob("*.png"))[:rows]
    if not names:
        raise SystemExit(f"no translated images in {translated / 'images'}")
    pairs = []
    for name in names:
        after = Image.open(translated / "images" / name).convert("RGB")
        before = Image.open(inputs / name).convert("RGB").resize(after.size, Image.BICUBIC)
        size = (after.width * scale, after.height * scale)
        pairs.append((before.resize(size, Image.NEAREST), after.resize(size, Image.NEAREST)))
    w, h, pad = pairs[0][1].width, pairs[0][1].height, 2
    grid = Image.new("RGB", (2 * w + 3 * pad, len(pairs) * (h + pad) + pad), "white")
    for i, (before, after) in enumerate(pairs):
        grid.paste(before, (pad, pad + i * (h + pad)))
        grid.paste(after, (2 * pad + w, pad + i * (h + pad)))
    tmp = out.with_name(out.name + ".tmp.png")
    grid.save(tmp)
    tmp.replace(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for the demo world and runs")
    parser.add_argument("--steps", type=int, default=None, help="UNIT training steps (default: the cpu preset's)")
    parser.add_argument("--no-downstream", action="store_true",
                        help="skip training segmenters on raw and translated images (saves about 1.5 minutes)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo everything")
    args = parser.parse_args()
    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    s2r = [sys.executable, "-m", "s2rcli"]
    world = out / "world"
    syn, real, val = (f"demo:{world}?split={s}" for s in ("synthetic", "real", "real_val"))
    seg = ["--model", "fastseg", "--preset", "tiny", "--steps", str(SEG_STEPS), "--size", SIZE]
    compare_dir = out / "compare"
    segmenter = compare_dir / "real_s0" / "checkpoints" / "latest.pt"   # the oracle row doubles as content scorer
    unit_run, translated = out / "runs" / "unit_cpu", out / "translated"
    t_start = time.perf_counter()

    run(s2r + ["models"])
    if not (world / "manifest.json").exists():
        run(s2r + ["prepare", "demo", "--out", str(world)])
    for name, spec in (("synthetic", syn), ("real", real)):
        if not (out / f"{name}_spfeat.npz").exists():
            run(s2r + ["prepare", "spfeat", spec, "--out", str(out / f"{name}_spfeat.npz")])
    if not (out / "pairs.npz").exists():
        run(s2r + ["prepare", "pairs", "--real", str(out / "real_spfeat.npz"), "--synthetic",
                   str(out / "synthetic_spfeat.npz"), "-k", "15", "--out", str(out / "pairs.npz")])
    if not (compare_dir / "real_s0" / "results.json").exists():
        run(s2r + ["segment-eval", "train-and-test", "--train", real, "--test", val, "--out",
                   str(compare_dir / "real_s0"), "--seed", "0", "--overwrite", *seg])
    state = run_state(unit_run, args.steps)
    if state != "finished":  # a stopped run (Ctrl-C, a kill) continues exactly where it was
        shutil.rmtree(translated, ignore_errors=True)  # the demo's own outputs of an older UNIT checkpoint
        shutil.rmtree(compare_dir / "unit_s0", ignore_errors=True)
        steps = ["--steps", str(args.steps)] if args.steps else []
        run(s2r + ["train", "unit", "--preset", "cpu", "--synthetic", syn, "--real", real, "--smart-batch",
                   "--pairs", str(out / "pairs.npz"), "--content-segmenter", str(segmenter), *steps,
                   "--out", str(unit_run), "--resume" if state == "stopped" else "--overwrite"])
    if not (translated / "content.json").exists():
        run(s2r + ["translate", "--checkpoint", str(unit_run), "--input", syn, "--output", str(translated),
                   "--size", SIZE, "--batch-size", "16", "--segmenter", str(segmenter), "--overwrite"])
    content = json.loads((translated / "content.json").read_text())
    grid = translation_grid(world / "synthetic" / "images", translated, out / "translations.png", scale=2)

    fid_args = ["--real", real, "--size", SIZE, "--inception-weights", inception_choice(), "--json"]
    fid = {}
    for name, images in (("raw", syn), ("translated", str(translated))):
        result = json.loads(run(s2r + ["-q", "fid", images, *fid_args], capture=True))
        fid[name] = next(r["fid"] for r in result["results"] if r["reference"] == "real")

    downstream = None
    if not args.no_downstream:
        run(s2r + ["segment-eval", "compare", "--synthetic", syn, "--translated", f"unit=folder:{translated}",
                   "--real-train", real, "--test", val, "--out", str(compare_dir), "--seeds", "0", *seg])
        downstream = json.loads((compare_dir / "compare.json").read_text())

    rows = summary_rows(fid, content, downstream)
    minutes = (time.perf_counter() - t_start) / 60
    width = max(len(r[0]) for r in rows)
    print(f"\nDemo finished in {minutes:.1f} min. Raw synthetic vs translated (UNIT, cpu preset, smart batch):\n")
    print(f"  {'measure':{width}s}  {'raw':>8s}  {'translated':>10s}  verdict")
    for measure, raw_v, trans_v, verdict in rows:
        print(f"  {measure:{width}s}  {raw_v:>8s}  {trans_v:>10s}  {verdict}")
    print("\nWhere to look:")
    print(f"  {'demo world':24s}{world}/  (synthetic/, real/, real_val/)")
    print(f"  {'SP-Feat pairs preview':24s}{out}/pairs_preview.png")
    print(f"  {'UNIT sample grids':24s}{unit_run}/samples/   loss curves: {unit_run}/losses.png")
    print(f"  {'content during training':24s}{unit_run}/content.jsonl")
    print(f"  {'input | translated':24s}{grid}")
    print(f"  {'translated images':24s}{translated}/images/   content per class: {translated}/content.json")
    if downstream is not None:
        print(f"  {'segmenter comparison':24s}{compare_dir}/compare.png and compare.json")
    print("Two seeds, random vs smart pairs and FID vs synthetic too: `make demo-table` (about an hour on 2 cores).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
