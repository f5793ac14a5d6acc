"""Benchmark UNIT: training seconds per step, translate images/s, peak memory.

For each preset (``tiny``: 64x128, batch 1; ``paper``: 256x512, batch 1) one fresh
process builds the real training task from the registry and measures, in the
same run and interleaved round by round (so load changes hit every variant alike):

* training (the real loop, ``s2rcli.training.loop.train``): plain eager against
  ``channels_last`` (the ``train.channels_last`` option);
* ``model.translate`` under ``torch.inference_mode``: eager, ``channels_last``
  and ``torch.compile`` (compile time reported separately).

Speed-ups are ratios against eager. ``torch.compile`` is not timed for training:
the loop toggles ``requires_grad`` per phase (D, then G), and every toggle is a
recompile (measured: 8 recompiles and ~450 s of warm-up at the tiny preset on CPU).
Peak memory: a second process per preset runs eager training and translation only
and reports its max RSS (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA).

Usage: python benchmarks/bench_unit.py [--presets tiny,paper] [--steps 3] [--rounds 3]
                                       [--threads 2] [--device cpu] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _build(preset: str, device, channels_last: bool):
    import torch

    from s2rcli.models import build_task, create_model
    from s2rcli.training.config import preset_defaults
    from s2rcli.device import DistInfo
    from toy_task import MemoryDataset

    cfg = preset_defaults("unit", preset)
    h, w = cfg["data"]["size"]
    cfg["data"].update(synthetic="mem", real="mem")
    data = {"synthetic": MemoryDataset(4, (h, w), seed=1), "real": MemoryDataset(4, (h, w), seed=2)}
    torch.manual_seed(0)
    model = create_model("unit", **cfg["model_kwargs"])
    task = build_task(model, cfg, data, DistInfo(), device)
    if channels_last:
        for net in task.nets.values():
            net.to(memory_format=torch.channels_last)
    return cfg, model, task


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_train(task, cfg, device, steps: int) -> float:
    from s2rcli.training.loop import train

    t0 = time.perf_counter()
    train(task, steps=steps, device=device, config=cfg)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _time_translate(fn, x, device, n: int) -> float:
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(n):
            fn(x)
        _sync(device)
    return n * x.shape[0] / (time.perf_counter() - t0)


def _speed(preset: str, steps: int, rounds: int, threads: int, device_name: str, compile_: bool, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    variants = {"eager": _build(preset, device, False), "channels_last": _build(preset, device, True)}
    h, w = variants["eager"][0]["data"]["size"]
    batch = 4 if preset == "tiny" else 1
    x = torch.rand(batch, 3, h, w, device=device) * 2 - 1
    inputs = {"eager": x, "channels_last": x.contiguous(memory_format=torch.channels_last)}
    translators = {name: (lambda m: (lambda t: m.translate(t)))(v[1].eval()) for name, v in variants.items()}
    compile_s = None
    if compile_:
        compiled = torch.compile(variants["eager"][1].translate)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        _sync(device)
        compile_s = time.perf_counter() - t0
        print(f"  [{preset}] translate compiled in {compile_s:.0f} s", file=sys.stderr, flush=True)
        translators["compile"] = compiled
        inputs["compile"] = x

    for cfg, model, task in variants.values():  # warm-up: allocator, kernels, first-call costs
        model.train()
        _time_train(task, cfg, device, 1)
    with torch.inference_mode():
        for name, fn in translators.items():
            fn(inputs[name])

    train_s: dict[str, list[float]] = {k: [] for k in variants}
    images_s: dict[str, list[float]] = {k: [] for k in translators}
    n_translate = max(2, steps)
    for r in range(rounds):
        for name, (cfg, model, task) in variants.items():
            model.train()
            train_s[name].append(_time_train(task, cfg, device, steps))
        for name, fn in translators.items():
            images_s[name].append(_time_translate(fn, inputs[name], device, n_translate))
        print(f"  [{preset}] round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.3f} s/step" for k, v in train_s.items()), file=sys.stderr, flush=True)
    queue.put({"preset": preset, "size": f"{h}x{w}", "batch_translate": batch,
               "sec_per_step": {k: statistics.median(v) for k, v in train_s.items()},
               "translate_images_per_s": {k: statistics.median(v) for k, v in images_s.items()},
               "compile_s": compile_s})


def _memory(preset: str, steps: int, threads: int, device_name: str, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg, model, task = _build(preset, device, False)
    _time_train(task, cfg, device, steps)
    h, w = cfg["data"]["size"]
    model.eval()
    with torch.inference_mode():
        model.translate(torch.zeros(1, 3, h, w, device=device))
    if device.type == "cuda":
        peak, base = torch.cuda.max_memory_allocated() / 2**20, 0.0
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"peak_mb": peak, "after_imports_mb": base})


def _run(ctx, target, *args):
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{target.__name__}{args[:1]} failed with exit code {proc.exitcode}")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,paper")
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles for minutes on CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.threads} torch thread(s); "
          f"device {args.device}", flush=True)
    for preset in args.presets.split(","):
        t0 = time.perf_counter()
        speed = _run(ctx, _speed, preset, args.steps, args.rounds, args.threads, args.device, not args.no_compile)
        speed.update(_run(ctx, _memory, preset, args.steps, args.threads, args.device))
        speed["wall_s"] = time.perf_counter() - t0
        if args.json:
            print(json.dumps(speed), flush=True)
            continue
        tr, im = speed["sec_per_step"], speed["translate_images_per_s"]
        print(f"{preset} ({speed['size']}, train batch 1, translate batch {speed['batch_translate']}):")
        print(f"  train     eager {tr['eager']:.3f} s/step | channels_last {tr['channels_last']:.3f} s/step "
              f"(x{tr['eager'] / tr['channels_last']:.2f})")
        line = (f"  translate eager {im['eager']:.2f} img/s | channels_last {im['channels_last']:.2f} img/s "
                f"(x{im['channels_last'] / im['eager']:.2f})")
        if "compile" in im:
            line += f" | compile {im['compile']:.2f} img/s (x{im['compile'] / im['eager']:.2f}; " \
                    f"compiled in {speed['compile_s']:.0f} s)"
        print(line)
        print(f"  peak memory {speed['peak_mb']:.0f} MB (after imports {speed['after_imports_mb']:.0f} MB); "
              f"benchmark wall {speed['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
