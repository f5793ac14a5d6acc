"""The whole s2r pipeline on the embedded demo world (what `make demo` runs).

Each step is the real `s2r` command a user would type, echoed before it runs:
write the demo world, compute SP-Feat for both domains, pair them, train UNIT
with random pairs and with the smart batch loader, translate the synthetic set
with both, and measure FID against real and synthetic images.

Finished steps are skipped when the demo is run again with the same --out
(delete a step's output to redo it, or pass --fresh).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> None:
    print(f"\n$ s2r {shlex.join(cmd[3:])}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"demo step failed (exit {rc}): s2r {shlex.join(cmd[3:])}")
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def inception_choice() -> str:
    """The real FID Inception when it is cached or downloadable; otherwise fixed random features, said loudly."""
    from s2rcli.errors import S2RError
    from s2rcli.pretrained import resolve_weights

    try:
        return str(resolve_weights("inception-fid"))
    except S2RError as exc:
        print(f"\nnote: {exc.one_line()}\n      FID below uses fixed random features: fine for comparing the runs "
              "of this demo with each other, not comparable to published numbers.")
        return "random"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for the demo world and runs")
    parser.add_argument("--steps", type=int, default=300, help="UNIT training steps per run (tiny preset)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo everything")
    args = parser.parse_args()
    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    s2r = [sys.executable, "-m", "s2rcli"]
    world = out / "world"
    syn, real = f"demo:{world}?split=synthetic", f"demo:{world}?split=real"
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

    runs = {"random": [], "smart": ["--smart-batch", "--pairs", str(out / "pairs.npz")]}
    for name, extra in runs.items():
        run_dir = out / "runs" / f"unit_{name}"
        if not (run_dir / "checkpoints" / "latest.pt").exists():
            run(s2r + ["train", "unit", "--preset", "tiny", "--synthetic", syn, "--real", real,
                       "--steps", str(args.steps), "--out", str(run_dir), "--overwrite", *extra])
        if not (out / f"translated_{name}" / "manifest.json").exists():
            run(s2r + ["translate", "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"), "--input", syn,
                       "--output", str(out / f"translated_{name}"), "--skip-existing"])

    weights = inception_choice()
    fid = ["--size", "128x256", "--inception-weights", weights]
    run(s2r + ["fid", syn, "--real", real, *fid])  # the baseline: untranslated synthetic images
    for name in runs:
        run(s2r + ["fid", str(out / f"translated_{name}"), "--real", real, "--synthetic", syn, *fid])

    minutes = (time.perf_counter() - t_start) / 60
    print(f"\nDemo finished in {minutes:.1f} min. Where to look:")
    print(f"  {'demo world':24s}{world}/  (synthetic/, real/, real_val/)")
    print(f"  {'SP-Feat pairs preview':24s}{out}/pairs_preview.png and {out}/class_frequencies.png")
    for name in runs:
        print(f"  {f'UNIT {name} grids':24s}{out}/runs/unit_{name}/samples/   loss curves: {out}/runs/unit_{name}/losses.png")
        print(f"  {f'translated ({name})':24s}{out}/translated_{name}/images/")
    print("Does translation help a segmenter on real images? `make demo-table` trains and tests segmenters"
          " on raw, translated and real data (benchmarks/demo_table.py, about half an hour on 2 CPU cores).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
