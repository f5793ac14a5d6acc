"""Which UNIT recipe keeps the content? Share of the raw->oracle gap closed, per recipe, world and seed.

For each demo world, seed and recipe it trains ``unit`` on the world's synthetic
and real images (random pairs, or ``--smart-batch``), translates the synthetic
set, trains the same small segmenter (fastseg, tiny preset) on the translations
and tests it on the world's ``real_val`` split. The baselines are the same
segmenter trained on the raw synthetic images and on the labelled real images
(the oracle); the gap closed is ``(mIoU_x - mIoU_raw) / (mIoU_oracle - mIoU_raw)``
per seed. It also reports the content-preservation score of each translation
(an oracle segmenter's mIoU against the synthetic labels the images were made
from), its FID against the world's real images (fixed random features at
64x128, the protocol of docs/fidelity.md) and per-class IoU.

Jobs run in parallel worker processes (``--jobs``), one torch thread each, so a
machine with many cores (or a GPU) runs the whole grid at once::

    python benchmarks/fidelity.py --out fidelity_out --worlds street,dusk --pairs random,smart --jobs 2
    python benchmarks/fidelity.py --out fidelity_out --recipes tiny,cpu --device cuda --jobs 12

With ``--keep-every N`` each UNIT run keeps a snapshot every N steps and every
snapshot is scored as a row of its own (``RECIPE@STEP``): one run gives the
curve of gap closed against training steps::

    python benchmarks/fidelity.py --out scan --recipes cpu --pairs smart --unit-steps 3000 --keep-every 500 --jobs 2

Finished jobs are reused when run again with the same --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from _stats import fmt  # benchmarks/ is on sys.path when a script here runs

# name -> (preset, --set overrides). Steps: --unit-steps when given, else the preset's (tiny 300, cpu 2000).
# The ablations of docs/fidelity.md ran with --unit-steps 2000 unless it says otherwise.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "tiny": ("tiny", []),
    "tiny_nonoise": ("tiny", ["train.vae_noise=0"]),
    "tiny_sem": ("tiny", ["train.loss.sem=1"]),
    "tiny_nonoise_sem": ("tiny", ["train.vae_noise=0", "train.loss.sem=1"]),
    "wide_nonoise_sem": ("tiny", ["train.vae_noise=0", "train.loss.sem=1", "model_kwargs.channels=32",
                                  "model_kwargs.n_res=3", "model_kwargs.d_channels=32"]),
    "down1_sem": ("tiny", ["train.loss.sem=1", "model_kwargs.n_down=1"]),
    "down1": ("tiny", ["model_kwargs.n_down=1"]),
    "tiny_sem_lr5": ("tiny", ["train.loss.sem=1", "train.lr=5e-4"]),
    "tiny_sem_d32": ("tiny", ["train.loss.sem=1", "model_kwargs.d_channels=32", "model_kwargs.d_layers=4"]),
    "tiny_sem3": ("tiny", ["train.loss.sem=3"]),  # the cpu preset's settings
    "tiny_sem5": ("tiny", ["train.loss.sem=5"]),
    "tiny_sem_b2": ("tiny", ["train.loss.sem=1", "train.batch_size=2"]),
    # 2.5x the steps (about 25 min on 2 cores), the learning rate halved every 2500 steps
    "tiny_sem3_long": ("tiny", ["train.loss.sem=3", "train.steps=5000", "train.lr_step=2500"]),
    # the learning rate quartered for the second half of a 2000-step run: a calmer end to the GAN's oscillation
    "tiny_sem3_decay": ("tiny", ["train.loss.sem=3", "train.lr_step=1000", "train.lr_gamma=0.25"]),
    # crops at up to twice the frame-covering scale: UNIT also sees objects at the size it translates them at
    "tiny_sem3_jit1": ("tiny", ["train.loss.sem=3", "data.scale_jitter=1.0"]),
    # residual decoders (model_kwargs.skip): the source image passes through, the network learns the change
    "tiny_sem_skip": ("tiny", ["train.loss.sem=1", "model_kwargs.skip=true"]),
    "tiny_sem3_skip": ("tiny", ["train.loss.sem=3", "model_kwargs.skip=true"]),
    "cpu": ("cpu", []),
}


def _world(out: Path, name: str, seed: int) -> Path:
    from s2rcli.data.demo import write_demo_world

    root = out / "worlds" / name
    if not (root / "manifest.json").is_file():
        kwargs = {} if name == "street" else {"style": name}
        write_demo_world(root, seed=seed, **kwargs)
    return root


def _segmenter(out: Path, tag: str, train: list[str], val: str, seed: int, steps: int, device: str) -> dict:
    from s2rcli.evaluation import train_and_test

    run = out / "seg" / tag
    done = run / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    return train_and_test(train, val, "fastseg", run, steps=steps, size=(64, 128), seed=seed, overwrite=True,
                          device=device)


def _fid(images: str, real: str, device: str) -> float:
    """FID of ``images`` against the world's real images: the docs' protocol (fixed random features, 64x128)."""
    from s2rcli.metrics.fid import compare, random_extractor

    return compare(images, [("real", real)], extractor=random_extractor(0), size=(64, 128),
                   device=device)["results"][0]["fid"]


def job(kind: str, out: str, world: str, seed: int, recipe: str | None, pairs: bool, args: dict) -> list[dict]:
    """One cell of the grid, in its own process: its result rows (a UNIT run: one per evaluated snapshot)."""
    import torch

    torch.set_num_threads(1)
    from s2rcli.console import settings
    from s2rcli.evaluation import score_generated
    from s2rcli.inference import translate_dataset
    from s2rcli.training.runner import train_run

    settings.quiet = True
    out_p, device = Path(out), args["device"]
    root = out_p / "worlds" / world
    syn, real, val = (f"demo:{root}?split={s}" for s in ("synthetic", "real", "real_val"))
    oracle = out_p / "seg" / f"{world}_oracle_s{seed}" / "checkpoints" / "latest.pt"  # scores content
    t0 = time.perf_counter()
    if kind == "raw_content":  # the oracle segmenter on the raw synthetic images: the content score to beat
        content = score_generated(syn, syn, oracle, device=device)
        return [{"kind": kind, "world": world, "seed": seed, "miou": content["scores"]["miou"],
                 "per_class": content["scores"]["per_class_iou"], "fid": _fid(syn, real, device),
                 "seconds": time.perf_counter() - t0}]
    if kind in ("raw", "oracle"):
        res = _segmenter(out_p, f"{world}_{kind}_s{seed}", [syn if kind == "raw" else real], val, seed,
                         args["seg_steps"], device)
        return [{"kind": kind, "world": world, "seed": seed, "miou": res["scores"]["miou"],
                 "per_class": res["scores"]["per_class_iou"], "seconds": time.perf_counter() - t0}]
    tag = f"{world}_{recipe}_{'smart' if pairs else 'random'}_s{seed}"
    preset, sets = RECIPES[recipe]
    unit_run = out_p / "unit" / tag
    options = {"data.synthetic": syn, "data.real": real, "data.size": [64, 128], "seed": seed,
               "train.checkpoint_every": 500, "train.sample_every": 500}
    if args["unit_steps"]:
        options["train.steps"] = args["unit_steps"]
    if pairs:
        options.update({"data.smart_batch": True, "data.pairs": str(out_p / "pairs" / f"{world}.npz")})
    if args["keep_every"]:
        options["train.keep_every"] = args["keep_every"]
    t_train = time.perf_counter()
    if not (unit_run / "checkpoints" / "latest.pt").is_file() or args["unit_steps"] and json.loads(
            (unit_run / "config.json").read_text())["train"]["steps"] != args["unit_steps"]:
        train_run("unit", unit_run, preset=preset, sets=sets, options=options, overwrite=True,
                  device=torch.device(device))
    unit_seconds = time.perf_counter() - t_train
    # the final weights, then each kept snapshot (--keep-every) as a row of its own, "recipe@step"
    snapshots = [(recipe, tag, unit_run / "checkpoints" / "latest.pt")]
    final = json.loads((unit_run / "config.json").read_text())["train"]["steps"]
    kept = {int(p.stem[5:]): p for p in (unit_run / "checkpoints").glob("step_*.pt")}
    snapshots += [(f"{recipe}@{step}", f"{tag}@{step}", kept[step]) for step in sorted(kept) if step != final]
    size = args["translate_size"]
    rows = []
    for name, snap_tag, ckpt in snapshots:
        translated_tag = snap_tag if size is None else f"{snap_tag}_{size[0]}x{size[1]}"
        translated = out_p / "translated" / translated_tag
        if not (translated / "manifest.json").is_file():
            translate_dataset(ckpt, syn, translated, size=size, overwrite=True, device=torch.device(device))
        res = _segmenter(out_p, translated_tag, [f"folder:{translated}"], val, seed, args["seg_steps"], device)
        content = score_generated(str(translated), syn, oracle, device=device)
        rows.append({"kind": "unit", "world": world, "seed": seed, "recipe": name,
                     "pairs": "smart" if pairs else "random",
                     "miou": res["scores"]["miou"], "per_class": res["scores"]["per_class_iou"],
                     "content_miou": content["scores"]["miou"], "content_per_class": content["scores"]["per_class_iou"],
                     "fid": _fid(str(translated), real, device), "unit_seconds": unit_seconds,
                     "seconds": time.perf_counter() - t0})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("fidelity_out"))
    p.add_argument("--worlds", default="street")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--recipes", default="cpu")
    p.add_argument("--pairs", default="random", help="random, smart or random,smart")
    p.add_argument("--unit-steps", type=int, default=None, help="UNIT steps (default: each recipe's preset's)")
    p.add_argument("--keep-every", type=int, default=0,
                   help="UNIT keeps a snapshot every N steps, and each is scored as a row RECIPE@STEP (a step scan)")
    p.add_argument("--seg-steps", type=int, default=600)
    p.add_argument("--translate-size", default=None,
                   help="HxW to translate at, e.g. 64x128 (UNIT's training size); default: the worlds' own size")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    worlds = [w for w in args.worlds.split(",") if w]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    recipes = [r for r in args.recipes.split(",") if r]
    modes = [m for m in args.pairs.split(",") if m]
    from s2rcli.utils.sizes import parse_size

    size = parse_size(args.translate_size)
    shared = {"device": args.device, "unit_steps": args.unit_steps, "seg_steps": args.seg_steps,
              "keep_every": args.keep_every,
              "translate_size": size}
    t0 = time.perf_counter()

    from s2rcli.console import settings

    settings.quiet = True
    for w in worlds:
        root = _world(out, w, 0)
        if "smart" in modes and not (out / "pairs" / f"{w}.npz").is_file():
            from s2rcli.data.pairing import pair_features, save_pairs
            from s2rcli.data.spfeat import compute_spfeat_file, load_spfeat

            feats = {}
            for split in ("real", "synthetic"):
                path = out / "pairs" / f"{w}_{split}_spfeat.npz"
                if not path.is_file():
                    compute_spfeat_file(f"demo:{root}?split={split}", path, progress=False, overwrite=True)
                feats[split] = load_spfeat(path)
            result = pair_features(feats["real"].features, feats["synthetic"].features)
            save_pairs(out / "pairs" / f"{w}.npz", result, feats["real"], feats["synthetic"], overwrite=True)
    print(f"worlds ready in {time.perf_counter() - t0:.0f} s", flush=True)

    base = [("raw", w, s, None, False) for w in worlds for s in seeds] + \
           [("oracle", w, s, None, False) for w in worlds for s in seeds]
    units = [("unit", w, s, r, m == "smart") for w in worlds for s in seeds for r in recipes for m in modes]
    units += [("raw_content", w, s, None, False) for w in worlds for s in seeds]
    results = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # the oracle segmenters score the translations' content, so they run first
        for stage in (base, units):
            futures = {pool.submit(job, k, str(out), w, s, r, m, shared): (k, w, s, r, m) for k, w, s, r, m in stage}
            for fut in as_completed(futures):
                try:
                    rows = fut.result()
                except Exception:
                    print(f"FAILED {futures[fut]}:\n{traceback.format_exc()}", flush=True)
                    continue
                results += rows
                for res in rows:
                    print(f"[{time.perf_counter() - t0:5.0f} s] {res['kind']} {res['world']} s{res['seed']} "
                          f"{res.get('recipe', '')} {res.get('pairs', '')}: mIoU {100 * res['miou']:.1f}"
                          + (f", content {100 * res['content_miou']:.1f}" if "content_miou" in res else ""), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results, worlds, seeds))
    print(per_class_table(results, worlds))
    print(f"total {time.perf_counter() - t0:.0f} s")


def table(results: list[dict], worlds: list[str], seeds: list[int]) -> str:
    lines = ["| world | training set | mIoU % | gap closed % | content mIoU % | FID vs real | UNIT s |",
             "|---|---|---|---|---|---|---|"]
    for w in worlds:
        raw = {r["seed"]: r["miou"] for r in results if r["kind"] == "raw" and r["world"] == w}
        ora = {r["seed"]: r["miou"] for r in results if r["kind"] == "oracle" and r["world"] == w}
        raw_rows = sorted((r for r in results if r["kind"] == "raw_content" and r["world"] == w),
                          key=lambda r: r["seed"])
        raw_content = [r["miou"] for r in raw_rows]
        raw_fid = [r["fid"] for r in raw_rows if "fid" in r]
        lines.append(f"| {w} | raw synthetic | {fmt([raw[s] for s in seeds if s in raw], 100)} | — | "
                     f"{fmt(raw_content, 100)} | {fmt(raw_fid, 1, 2)} | — |")
        keys = sorted({(r["recipe"], r["pairs"]) for r in results if r["kind"] == "unit" and r["world"] == w})
        for recipe, pairs in keys:
            rows = sorted((r for r in results if r["kind"] == "unit" and r["world"] == w and r["recipe"] == recipe
                           and r["pairs"] == pairs), key=lambda r: r["seed"])  # values print in seed order
            gaps = [(r["miou"] - raw[r["seed"]]) / (ora[r["seed"]] - raw[r["seed"]]) for r in rows
                    if r["seed"] in raw and r["seed"] in ora]
            lines.append(f"| {w} | {recipe}, {pairs} | {fmt([r['miou'] for r in rows], 100)} | {fmt(gaps, 100)} | "
                         f"{fmt([r['content_miou'] for r in rows], 100)} | "
                         f"{fmt([r['fid'] for r in rows if 'fid' in r], 1, 2)} | "
                         f"{fmt([r['unit_seconds'] for r in rows], 1, 0)} |")
        lines.append(f"| {w} | real (oracle) | {fmt([ora[s] for s in seeds if s in ora], 100)} | — | — | — | — |")
    return "\n".join(lines)


def per_class_table(results: list[dict], worlds: list[str]) -> str:
    """Per-class IoU % (mean over seeds) of each row: segmenter on real_val / content (the oracle on the images)."""
    from s2rcli.data.labels import get_label_space

    def mean(values: list) -> str:
        values = [v for v in values if v is not None]
        return f"{100 * sum(values) / len(values):.1f}" if values else "—"

    out = []
    for w in worlds:
        rows = [("raw synthetic", [r for r in results if r["kind"] == "raw" and r["world"] == w],
                 [r for r in results if r["kind"] == "raw_content" and r["world"] == w])]
        for recipe, pairs in sorted({(r["recipe"], r["pairs"]) for r in results if r["kind"] == "unit" and r["world"] == w}):
            mine = [r for r in results if r["kind"] == "unit" and r["world"] == w and r["recipe"] == recipe
                    and r["pairs"] == pairs]
            rows.append((f"{recipe}, {pairs}", mine, [{"per_class": r["content_per_class"]} for r in mine]))
        rows.append(("real (oracle)", [r for r in results if r["kind"] == "oracle" and r["world"] == w], []))
        out += [f"\n{w}: per-class IoU % (mean over seeds), segmenter on real_val / content",
                "| class | " + " | ".join(name for name, _, _ in rows) + " |", "|---|" + "---|" * len(rows)]
        for c in get_label_space("cityscapes19").class_names:
            cells = []
            for name, seg, content in rows:
                cell = mean([r["per_class"].get(c) for r in seg])
                cells.append(cell if not content else f"{cell} / {mean([r['per_class'].get(c) for r in content])}")
            out.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
