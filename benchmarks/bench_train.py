"""Benchmark the training fast path: the plain eager fp32 loop against the fast path, in one run.

For each model (unit and sis; sait and lab2pix-v1 too when registered) and size (the tiny preset at
--tiny-size, 128x256 by default; the paper preset at its own size, batch 1, a few steps), every
configuration trains the real task on image files (a two-domain world of 256x512 PNGs written once)
in a fresh process, so its peak memory (max RSS; CUDA: max allocated) is its own. Configurations
run round-robin, A/B interleaved: round r runs each configuration once before round r + 1, so a
burst of load from other work hits them alike. Reported per configuration: the median seconds per
step over the rounds, steps/s, the ratio against eager (the median of the per-round ratios, each
eager round against the same round of the configuration), peak memory, and how far its losses over
the first steps are from eager's (max relative difference of any logged term; 0 = bit-identical).

Configurations (tiny): ``eager`` (the loop as it was: NCHW fp32, one-tensor-at-a-time Adam, every
image decoded at every draw), ``fast`` (the automatic fast path of this device: FastPath.resolve of
the defaults, and the decoded-image cache), then ``fast`` with one part removed (``-cpu_bf16``,
``-foreach``, ``-cache``) or added (``+channels_last``, ``+workers``, ``+compile`` with --compile),
and ``eager+channels_last``. The paper size runs eager and fast only.

--quality N also trains unit (tiny preset, 64x128) for N steps eager and on the fast path, and
compares the losses: the first steps, and the mean over the last fifth of the run.

Usage: python benchmarks/bench_train.py [--models unit,sis] [--sizes tiny,paper] [--steps 3] [--rounds 3]
                                       [--paper-steps 1] [--paper-rounds 2] [--threads 1] [--device cpu]
                                       [--compile] [--quality 300] [--json]
GPU figures: python benchmarks/bench_train.py --device cuda [--amp bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

OPTIONAL_MODELS = ("sait", "lab2pix-v1")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --- one configuration, in its own process ------------------------------------------------------------


def worker(spec: dict) -> dict:
    """Build ``spec["model"]``'s task on the world, train warm-up + timed steps, report time, memory, losses."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    import cv2

    cv2.setNumThreads(1)
    from s2rcli.device import DistInfo
    from s2rcli.models import build_task, create_model
    from s2rcli.training.config import preset_defaults
    from s2rcli.training.loop import FastPath, Observer, train
    from s2rcli.training.runner import open_training_data

    device = torch.device(spec["device"])
    cfg = preset_defaults(spec["model"], spec["preset"])
    cfg["data"].update(spec["data"])
    cfg["data"]["size"] = list(spec["size"])
    cfg["train"].update(batch_size=int(spec["batch"]), cache_mb=float(spec["cache_mb"]), workers=int(spec["workers"]),
                        log_every=10**9, sample_every=10**9, checkpoint_every=10**9)
    for key in ("vgg_weights",):  # perceptual terms: random VGG weights (speed is the same; nothing to download)
        if key in cfg["train"]:
            cfg["train"][key] = "random"
    fast = FastPath(**spec["fast"])
    data = open_training_data(cfg)
    torch.manual_seed(0)
    model = create_model(spec["model"], **cfg["model_kwargs"])
    task = build_task(model, cfg, data, DistInfo(), device)

    class Clock(Observer):
        def __init__(self):
            self.times, self.losses = [], []

        def on_step_end(self, state, terms):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            self.losses.append({k: float(v) for k, v in terms.items()})  # read after the clock: not timed

    clock = Clock()
    warm = int(spec["warmup"])
    t0 = time.perf_counter()
    train(task, steps=warm + int(spec["steps"]), device=device, config=cfg, amp=spec.get("amp"), fast=fast,
          observers=[clock])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = clock.times[warm - 1:]
    return {"sec_per_step": (timed[-1] - timed[0]) / (len(timed) - 1), "warmup_s": clock.times[warm - 1] - t0,
            "peak_mb": peak, "losses": clock.losses, "fast": fast.describe()}


def run_worker(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['model']} {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- configurations --------------------------------------------------------------------------------------


def configurations(args, device_type: str, paper: bool) -> dict[str, dict]:
    """name -> (fast path fields, cache_mb, workers, amp) for this device."""
    import torch

    from s2rcli.models.config import TrainConfig
    from s2rcli.training.loop import FastPath

    defaults = TrainConfig()
    auto = FastPath.resolve({"channels_last": defaults.channels_last, "cpu_bf16": defaults.cpu_bf16,
                             "optimizer_impl": defaults.optimizer_impl}, torch.device(device_type))
    fast = {"channels_last": auto.channels_last, "cpu_bf16": auto.cpu_bf16, "optimizer": auto.optimizer}
    amp = args.amp if device_type == "cuda" else None
    cache = float(defaults.cache_mb)
    configs = {
        "eager": {"fast": {}, "cache_mb": 0, "workers": 0, "amp": None},
        "fast": {"fast": fast, "cache_mb": cache, "workers": 0, "amp": amp},
    }
    if paper:
        return configs
    if fast["cpu_bf16"]:
        configs["fast -cpu_bf16"] = {"fast": {**fast, "cpu_bf16": False}, "cache_mb": cache, "workers": 0, "amp": amp}
    configs["fast -foreach"] = {"fast": {**fast, "optimizer": None}, "cache_mb": cache, "workers": 0, "amp": amp}
    configs["fast -cache"] = {"fast": fast, "cache_mb": 0, "workers": 0, "amp": amp}
    configs["fast " + ("-" if fast["channels_last"] else "+") + "channels_last"] = {
        "fast": {**fast, "channels_last": not fast["channels_last"]}, "cache_mb": cache, "workers": 0, "amp": amp}
    configs["fast +workers=1"] = {"fast": fast, "cache_mb": cache, "workers": 1, "amp": amp}
    configs["eager +channels_last"] = {"fast": {"channels_last": True}, "cache_mb": 0, "workers": 0, "amp": None}
    if args.compile:
        configs["fast +compile"] = {"fast": {**fast, "compile": True}, "cache_mb": cache, "workers": 0, "amp": amp}
    return configs


def loss_gap(a: list[dict], b: list[dict]) -> float:
    """The largest relative difference of any term over the steps both logged, relative to the term's
    size or 1e-2, whichever is larger (terms near zero are compared absolutely); 0.0: bit-identical."""
    gap = 0.0
    for x, y in zip(a, b):
        for key, value in x.items():
            if key in y and value != y[key]:
                gap = max(gap, abs(value - y[key]) / max(abs(value), 1e-2))
    return gap


def bench(args, model: str, size_name: str, world: dict[str, str]) -> dict:
    from s2rcli.training.config import preset_defaults

    paper = size_name == "paper"
    preset = "paper" if paper else "tiny"
    size = preset_defaults(model, preset)["data"]["size"] if paper else [int(v) for v in args.tiny_size.split("x")]
    configs = configurations(args, args.device, paper)
    steps, rounds = (args.paper_steps, args.paper_rounds) if paper else (args.steps, args.rounds)
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, c in configs.items():
            spec = {"model": model, "preset": preset, "size": size, "batch": 1, "steps": steps, "warmup": 1,
                    "threads": args.threads, "device": args.device, "name": name, "data": world,
                    "fast": c["fast"], "cache_mb": c["cache_mb"], "workers": c["workers"], "amp": c["amp"]}
            results[name].append(run_worker(spec))
        print(f"  [{model} {size_name}] round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {v[-1]['sec_per_step']:.3f}" for n, v in results.items()), file=sys.stderr, flush=True)
    eager = results["eager"]
    rows = {}
    for name, runs in results.items():
        per_round = [e["sec_per_step"] / x["sec_per_step"] for e, x in zip(eager, runs)]
        rows[name] = {
            "sec_per_step": statistics.median(x["sec_per_step"] for x in runs),
            "speedup": statistics.median(per_round), "speedup_rounds": per_round,
            "peak_mb": max(x["peak_mb"] for x in runs), "loss_gap": loss_gap(eager[0]["losses"], runs[0]["losses"]),
            "same_losses_every_round": all(x["losses"] == runs[0]["losses"] for x in runs),
            "fast": runs[0]["fast"],
        }
    return {"model": model, "size": size_name, "hw": f"{size[0]}x{size[1]}", "steps": steps, "rounds": rounds,
            "configs": rows}


def quality(args, world: dict[str, str]) -> dict:
    """unit, tiny preset at 64x128: eager and the fast path for ``args.quality`` steps, from the same start."""
    configs = configurations(args, args.device, paper=True)
    out = {}
    for name in ("eager", "fast"):
        c = configs[name]
        spec = {"model": "unit", "preset": "tiny", "size": [64, 128], "batch": 1, "steps": args.quality - 1,
                "warmup": 1, "threads": args.threads, "device": args.device, "name": name, "data": world,
                "fast": c["fast"], "cache_mb": c["cache_mb"], "workers": 0, "amp": c["amp"]}
        out[name] = run_worker(spec)
    tail = max(1, args.quality // 5)
    summary = {}
    for name, run in out.items():
        losses = run["losses"]
        summary[name] = {key: statistics.fmean(step[key] for step in losses[-tail:])
                         for key in ("G/loss", "D/loss", "G/recon_x", "G/cyc_x", "G/gan")}
        summary[name]["sec_per_step"] = run["sec_per_step"]
    summary["first_10_steps_gap"] = loss_gap(out["eager"]["losses"][:10], out["fast"]["losses"][:10])
    summary["steps"], summary["tail"] = args.quality, tail
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=None, help="comma-separated (default: unit, sis, and sait, lab2pix-v1 "
                                                       "when registered)")
    parser.add_argument("--sizes", default="tiny,paper")
    parser.add_argument("--tiny-size", default="128x256")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round (tiny)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (tiny); the median is reported")
    parser.add_argument("--paper-steps", type=int, default=1)
    parser.add_argument("--paper-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and OMP_NUM_THREADS) per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default=None, help="CUDA: the fast path's --amp (bf16 or fp16)")
    parser.add_argument("--compile", action="store_true", help="also time +compile (minutes of compiling on CPU)")
    parser.add_argument("--quality", type=int, default=0, help="also train unit N steps eager and fast")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    from s2rcli.models import list_models
    from toy_task import write_folder_world

    registered = set(list_models(trainable=True))
    models = args.models.split(",") if args.models else ["unit", "sis"] + [m for m in OPTIONAL_MODELS if m in registered]
    print(f"# {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"{args.threads} torch thread(s) and OMP_NUM_THREADS={args.threads} per process; device {args.device}",
          flush=True)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        specs = write_folder_world(Path(tmp) / "world", n=8, size=(256, 512))
        world = {"synthetic": specs["synthetic"], "real": specs["real"]}
        for model in models:
            for size_name in args.sizes.split(","):
                report = bench(args, model, size_name, world)
                reports.append(report)
                if args.json:
                    print(json.dumps(report), flush=True)
                    continue
                print(f"\n{model}, {size_name} preset at {report['hw']}, batch 1 ({report['steps']} timed steps x "
                      f"{report['rounds']} rounds):")
                print(f"  {'configuration':<22}{'s/step':>9}{'steps/s':>9}{'vs eager':>10}{'peak MB':>9}"
                      f"{'loss gap':>10}  per-round ratios / fast path")
                for name, row in report["configs"].items():
                    rounds = " ".join(f"{v:.2f}" for v in row["speedup_rounds"])
                    print(f"  {name:<22}{row['sec_per_step']:>9.3f}{1 / row['sec_per_step']:>9.2f}"
                          f"{row['speedup']:>9.2f}x{row['peak_mb']:>9.0f}{row['loss_gap']:>10.1e}  "
                          f"[{rounds}] {row['fast']}" + ("" if row["same_losses_every_round"] else " (losses varied!)"),
                          flush=True)
        if args.quality:
            q = quality(args, world)
            reports.append({"quality": q})
            if args.json:
                print(json.dumps({"quality": q}))
            else:
                print(f"\nquality: unit tiny 64x128, {q['steps']} steps; mean of the last {q['tail']} steps "
                      f"(first 10 steps: max relative gap {q['first_10_steps_gap']:.1e})")
                for name in ("eager", "fast"):
                    print(f"  {name:<6}" + "  ".join(f"{k} {v:.4f}" for k, v in q[name].items()))
        print(f"\n# load average {os.getloadavg()[0]:.1f} at end; benchmark wall {time.perf_counter() - t0:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
