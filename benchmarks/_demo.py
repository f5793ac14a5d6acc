"""The stages that the label-to-image benchmarks on the demo world share (``sis_demo.py``,
``lab2pix_demo.py``): running ``s2r`` commands, choosing weights, the demo world, the judge
segmenter, and generating, scoring and FID of a trained run.

Every stage drives the real CLI through a subprocess and logs it to OUT/logs/NAME.log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


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

    def training_minutes(self) -> float:
        return sum(v for k, v in self.timings.items() if k.startswith("train_")) / 60


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


def demo_arguments(description: str, out: str, seeds: str) -> argparse.ArgumentParser:
    """The options every demo benchmark takes (a script adds its own)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--world", type=Path, default=None, help="demo world folder (default OUT/world; made if missing)")
    p.add_argument("--seeds", default=seeds)
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--size", default="32x64", help="training and generation size; also the segmenter's and FID's")
    p.add_argument("--seg-steps", type=int, default=600)
    p.add_argument("--vgg-weights", default="auto", help="PATH, random, or auto (cache, else random)")
    p.add_argument("--inception-weights", default="auto", help="PATH, random, or auto (cache, else random features)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained and evaluated in parallel (1 thread each)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fresh", action="store_true", help="redo every stage")
    return p


@dataclass
class Demo:
    """A benchmark's settings, its demo world and its judge: the segmenter trained on real images."""

    args: argparse.Namespace
    out: Path
    world: Path
    seeds: list[int]
    jobs: int
    run: Runner
    vgg: str
    vgg_pretrained: bool
    inception: str
    inception_pretrained: bool
    t_start: float
    oracle: dict | None = None    # the judge's scores on real_val
    judge: str = ""               # its checkpoint

    @classmethod
    def start(cls, args: argparse.Namespace) -> "Demo":
        """Prepare OUT (emptied with --fresh), the world (made if missing) and the judge (trained if missing)."""
        out = args.out
        if args.fresh and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        jobs = max(1, args.jobs)
        run = Runner(out, args.device, max(1, (os.cpu_count() or 2) // jobs) if jobs > 1 else None)
        vgg, vgg_pretrained = pick_weights("vgg16", args.vgg_weights)
        inception, inception_pretrained = pick_weights("inception-fid", args.inception_weights)
        demo = cls(args, out, args.world or out / "world", [int(s) for s in args.seeds.split(",") if s.strip()], jobs,
                   run, vgg, vgg_pretrained, inception, inception_pretrained, time.perf_counter())
        if not (demo.world / "manifest.json").exists():
            run("world", "prepare", "demo", "--out", str(demo.world))
        seg = out / "segmenter"
        if not (seg / "results.json").exists():
            run("segmenter", "segment-eval", "train-and-test", "--train", demo.spec("real"), "--test",
                demo.spec("real_val"), "--out", str(seg), "--size", args.size, "--steps", str(args.seg_steps),
                "--overwrite")
        demo.oracle = json.loads((seg / "results.json").read_text())["scores"]
        demo.judge = str(seg / "checkpoints" / "latest.pt")
        return demo

    def spec(self, split: str) -> str:
        return f"demo:{self.world}?split={split}"

    @property
    def fid_label(self) -> str:
        return "FID vs real" + ("" if self.inception_pretrained else " (random features; not comparable to papers)")

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.t_start) / 60

    def train(self, name: str, model: str, data: Sequence[str], seed: int, extra: Sequence[str] = ()) -> Path:
        """Train OUT/runs/NAME with the tiny preset at the benchmark's size, steps and VGG weights,
        unless a finished run is there; returns the run folder."""
        folder = self.out / "runs" / name
        if not (folder / "done").exists():
            self.run(f"train_{name}", "train", model, "--preset", "tiny", *data, "--out", str(folder), "--size",
                     self.args.size, "--steps", str(self.args.steps), "--seed", str(seed), "--vgg-weights", self.vgg,
                     "--overwrite", "--set", "train.sample_every=100000", *extra)
            (folder / "done").write_text("ok\n")
        return folder

    def result(self, name: str, compute: Callable[[], dict]) -> dict:
        """OUT/results/NAME.json: read when a previous invocation wrote it, else computed and written."""
        path = self.out / "results" / f"{name}.json"
        if not path.exists():
            result = compute()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2))
        return json.loads(path.read_text())

    def generate_and_score(self, name: str, checkpoint: Path, split: str, seed: int) -> tuple[Path, dict]:
        """Generate from the labels of ``split`` into OUT/generated/NAME/SPLIT and score the images
        with the judge: ``(folder, scores)`` (mIoU between each image and its label map)."""
        gen = self.out / "generated" / name / split
        self.run(f"translate_{name}_{split}", "translate", "--checkpoint", str(checkpoint), "--input", self.spec(split),
                 "--output", str(gen), "--size", self.args.size, "--seed", str(seed), "--overwrite")
        scored = self.run(f"score_{name}_{split}", "segment-eval", "score", "--images", str(gen), "--labels", str(gen),
                          "--segmenter", self.judge, "--json")
        return gen, json.loads(scored)["scores"]

    def fid_vs_real(self, name: str, images: str | Path) -> float:
        """FID of ``images`` (a folder or spec) against the real images, at the benchmark's size."""
        out = self.run(f"fid_{name}", "fid", str(images), "--real", self.spec("real"), "--size", self.args.size,
                       "--inception-weights", self.inception, "--json", "--no-cache")
        return json.loads(out)["results"][0]["fid"]
