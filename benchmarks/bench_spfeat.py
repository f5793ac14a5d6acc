"""Benchmark SP-Feat and KNN pairing.

Prints:
  1. SP-Feat throughput on 1052 x 1914 label PNGs next to a decode-only pass over
     the same files in the same run (target: at most 10% over decode-only), and
     the scaling from 1 to 2 worker processes;
  2. KNN pairing time for 25,000 synthetic x 3,000 real SP-Feat vectors at the
     default levels (19 classes x 21 slices = 399 dims), from random but
     realistic street-layout label maps (target: under 10 s on 2 cores);
  3. peak memory of both (tracemalloc for this process, ru_maxrss for workers);
  4. with --scale REALxSYNTHETIC (e.g. 25000x250000, the full GTA5 x Mapillary scale, or
     25000x25000), pairing at that scale on SP-Feat-like vectors of the real dimension (399),
     made fast: street layouts rendered at 16x32 in bulk, their SP-Feat, and each slice's histogram
     blended 10% with a random two-class one (26% non-zero like real SP-Feat, a flatter PCA
     spectrum than the layouts alone); --shift makes the real layouts greener than the synthetic
     ones (a domain gap: the quota binds and rows search deeper). Each scale runs in a fresh
     process: wall and CPU seconds, per-round query times, and peak RSS over the vectors alone.

Usage: python benchmarks/bench_spfeat.py [--images 64] [--real 3000] [--synthetic 25000]
                                         [--scale 25000x250000[,25000x25000]] [--shift] [--only-scale]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from s2rcli.data.pairing import pair_features
from s2rcli.data.spfeat import DEFAULT_LEVELS, compute_spfeat_file, feature_dim, spfeat, spfeat_with_counts

H, W = 1052, 1914
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK = range(15)


def street_label(rng: np.random.Generator, h: int, w: int, green: float = 0.3) -> np.ndarray:
    """A plausible street scene in perspective: sky, facades or trees, road, sidewalks, cars, poles, people.

    Slanted edges and round tree crowns make the PNGs compress and decode like
    real annotation rather than like flat blocks.
    """
    import cv2

    label = np.full((h, w), SKY, np.uint8)
    horizon = int(h * rng.uniform(0.38, 0.52))
    vx = int(w * rng.uniform(0.35, 0.65))  # vanishing point
    x = 0
    while x < w:  # facades with slanted roof lines, or tree crowns, above the horizon
        step = int(w * rng.uniform(0.04, 0.15))
        top_l, top_r = int(h * rng.uniform(0.0, 0.35)), int(h * rng.uniform(0.0, 0.35))
        if rng.random() < green:
            cv2.ellipse(label, (x + step // 2, (top_l + horizon) // 2), (step, max(1, (horizon - top_l) // 2)),
                        0, 0, 360, VEGETATION, -1)
        else:
            cv2.fillPoly(label, [np.array([[x, horizon], [x, top_l], [x + step, top_r], [x + step, horizon]])], BUILDING)
        x += step
    cv2.fillPoly(label, [np.array([[vx, horizon], [w, horizon + h // 10], [w, h], [0, h], [0, horizon + h // 10]])],
                 ROAD)
    walk = int(w * rng.uniform(0.15, 0.35))
    cv2.fillPoly(label, [np.array([[vx - 5, horizon], [0, h - h // 4], [0, horizon + 2]])], SIDEWALK)
    cv2.fillPoly(label, [np.array([[vx + 5, horizon], [w, h - walk // 3], [w, horizon + 2]])],
                 TERRAIN if rng.random() < green else SIDEWALK)
    for _ in range(rng.integers(2, 10)):  # cars and trucks, bigger when nearer
        y0 = int(rng.uniform(horizon, h * 0.85))
        scale = (y0 - horizon + 10) / (h - horizon)
        cw, ch = int(w * 0.25 * scale * rng.uniform(0.6, 1.2)), int(h * 0.2 * scale)
        x0 = int(rng.uniform(0, w - cw))
        cv2.rectangle(label, (x0, y0 - ch), (x0 + cw, y0), CAR if rng.random() < 0.85 else TRUCK, -1)
        cv2.ellipse(label, (x0 + cw // 2, y0 - ch), (cw // 3, max(1, ch // 3)), 0, 180, 360,
                    CAR if rng.random() < 0.85 else TRUCK, -1)
    for _ in range(rng.integers(3, 15)):  # thin poles, signs, lights, people, fences
        cls = int(rng.choice([POLE, SIGN, LIGHT, PERSON, RIDER, FENCE, WALL]))
        pw, ph = max(2, int(w * rng.uniform(0.003, 0.03))), int(h * rng.uniform(0.05, 0.4))
        x0, y0 = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
        cv2.fillPoly(label, [np.array([[x0, y0 + ph], [x0 + pw // 3, y0], [x0 + pw, y0 + ph // 8], [x0 + pw, y0 + ph]])],
                     cls)
    cv2.ellipse(label, (w // 2, h + h // 20), (w // 2, h // 8), 0, 180, 360, 255, -1)  # ego vehicle, ignored
    return label


@dataclass
class PngLabels:
    """A minimal dataset over label PNGs: exactly what a folder dataset's read_label does (PIL decode)."""

    files: list[Path]

    class space:  # noqa: N801 - a namespace standing in for a LabelSpace
        name, num_classes, ignore_index = "cityscapes19", 19, 255

    kind, root, split, has_labels = "folder", "bench", None, True

    @property
    def names(self):
        return [f.stem for f in self.files]

    def __len__(self):
        return len(self.files)

    def read_label(self, i: int) -> np.ndarray:
        with Image.open(self.files[i]) as im:
            return np.asarray(im)


def best_of(fn, repeats: int = 3) -> float:
    return timed(fn, repeats)[0]


def timed(fn, repeats: int = 3) -> tuple[float, float]:
    """Best wall time and best CPU time of this process (the latter barely moves when the machine is busy)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def bench_spfeat(n_images: int) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i in range(n_images):
            files.append(tmp / f"{i:04d}.png")
            png = Image.fromarray(street_label(rng, H, W), mode="L").convert("P")  # palette PNGs, like GTA5's
            png.putpalette([v for i in range(256) for v in (i * 37 % 256, i * 91 % 256, i * 53 % 256)])
            png.save(files[-1])
        size = sum(f.stat().st_size for f in files) / n_images / 1024
        data = PngLabels(files)
        labels = [data.read_label(i) for i in range(min(4, n_images))]

        # Interleaved, best of 5 each, so a burst of load on the machine hits both alike.
        decode, both = (float("inf"),) * 2, (float("inf"),) * 2
        for _ in range(5):
            decode = tuple(map(min, decode, timed(lambda: [data.read_label(i) for i in range(n_images)], 1)))
            both = tuple(map(min, both, timed(lambda: [spfeat_with_counts(data.read_label(i), 19)
                                                        for i in range(n_images)], 1)))
        feat_only = timed(lambda: [spfeat(label, 19) for label in labels], 5)
        outs = iter(range(1000))

        def run(workers):
            return lambda: compute_spfeat_file(data, tmp / f"out{next(outs)}.npz", workers=workers, progress=False,
                                               chunk_size=max(1, n_images // (4 * workers)))

        one = timed(run(1))
        two = best_of(run(2))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            decode2 = best_of(lambda: pool.map(_decode, [(data, i) for i in range(n_images)], chunksize=4))
        mem = peak_mib(run(1))

        def rate(t, n=n_images):
            return f"{n / t:6.1f} img/s ({1000 * t / n:5.2f} ms/img)"

        def over(t, base):
            return f"{100 * (t / base - 1):+5.1f}%"

        print(f"SP-Feat on {n_images} label PNGs of {H}x{W} (~{size:.0f} KiB each, palette mode like GTA5), "
              f"levels {DEFAULT_LEVELS}, {feature_dim(19)} dims; best of 3-5 runs, wall time [CPU time]")
        print(f"  decode only (PIL), 1 process   : {rate(decode[0])}  [{rate(decode[1])}]")
        print(f"  SP-Feat only (in memory)       : {rate(feat_only[0], len(labels))}  [{rate(feat_only[1], len(labels))}]")
        print(f"  decode + SP-Feat, plain loop   : {rate(both[0])}  [{rate(both[1])}]  "
              f"{over(both[0], decode[0])} [{over(both[1], decode[1])}] vs decode only; target <= +10%")
        print(f"  compute_spfeat_file, 1 worker  : {rate(one[0])}  [{rate(one[1])}]  "
              f"{over(one[0], decode[0])} [{over(one[1], decode[1])}] vs decode only, incl. writing the .npz")
        print(f"  decode only, 2 processes       : {rate(decode2)}  (x{decode[0] / decode2:.2f} vs 1 process)")
        print(f"  compute_spfeat_file, 2 workers : {rate(two)}  (x{one[0] / two:.2f} vs 1 worker)")
        print(f"  peak traced memory, 1 worker   : {mem:.1f} MiB (this process; output matrix "
              f"{n_images * feature_dim(19) * 4 / 2**20:.2f} MiB)")
        print(f"  max RSS: this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
              f"largest worker {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")


def _decode(args):
    data, i = args
    return data.read_label(i).shape


def _layout_block(args) -> np.ndarray:
    seed, n, green = args
    rng = np.random.default_rng(seed)
    return np.stack([spfeat(street_label(rng, 48, 96, green), 19) for _ in range(n)])


def layout_features(n: int, seed: int, green: float) -> np.ndarray:
    """SP-Feat of n small street layouts (48 x 96 is plenty for 4 x 4 slices), made in 2 processes."""
    blocks = [(seed * 1000 + b, min(1000, n - 1000 * b), green) for b in range((n + 999) // 1000)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return np.concatenate(pool.map(_layout_block, blocks))


def bench_pairing(n_real: int, n_syn: int, k: int) -> None:
    t0 = time.perf_counter()
    synthetic = layout_features(n_syn, 1, green=0.15)  # built-up streets
    real = layout_features(n_real, 2, green=0.5)  # greener suburbs
    t_feats = time.perf_counter() - t0
    nonzero = (synthetic > 0).mean()
    t0, c0 = time.perf_counter(), time.process_time()
    result = pair_features(real, synthetic, k)
    t_pair, c_pair = time.perf_counter() - t0, time.process_time() - c0
    mem = peak_mib(lambda: pair_features(real, synthetic, k))
    print(f"KNN pairing: {n_real} real x {n_syn} synthetic, {real.shape[1]} dims ({100 * nonzero:.0f}% non-zero), K={k}")
    print(f"  (making the vectors took {t_feats:.1f} s, not counted)")
    print(f"  pairing time                  : {t_pair:.2f} s wall, {c_pair:.2f} s CPU over all threads (target < 10 s)")
    print(f"  coverage                      : {100 * result.coverage:.1f}%  (plain KNN {100 * result.plain_coverage:.1f}%, "
          f"max uses {result.max_uses}, {result.replaced} slots replaced, {result.over_quota} over quota)")
    print(f"  peak traced memory            : {mem:.1f} MiB")


# --- SP-Feat-like vectors in bulk, and pairing at full scale -------------------------------------------


def street_layouts(n: int, rng: np.random.Generator, h: int = 16, w: int = 32, green: float = 0.3) -> np.ndarray:
    """n street layouts at h x w, vectorised: sky, facades or trees, road and sidewalks, cars, poles, ego vehicle."""
    ys, xs = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    lab = np.full((n, h, w), SKY, np.uint8)
    horizon = (h * rng.uniform(0.38, 0.52, n)).astype(int)[:, None, None]
    blocks = 8
    block_of = np.broadcast_to((np.arange(w) * blocks // w)[None, :], (n, w))
    tops = np.take_along_axis((h * rng.uniform(0.0, 0.35, (n, blocks))).astype(int), block_of, 1)[:, None, :]
    kinds = np.where(rng.random((n, blocks)) < green, VEGETATION, BUILDING).astype(np.uint8)
    kind = np.take_along_axis(kinds, block_of, 1)[:, None, :]
    lab = np.where((ys >= tops) & (ys < horizon), kind, lab)
    vx = (w * rng.uniform(0.35, 0.65, n))[:, None, None]
    below = ys >= horizon
    lab = np.where(below, ROAD, lab)
    depth = (ys - horizon) / np.maximum(1, h - horizon)
    left = below & (xs < vx * (1 - depth) - depth * w * rng.uniform(0.0, 0.3, n)[:, None, None])
    right = below & (xs > vx + (w - vx) * depth * rng.uniform(0.6, 1.2, n)[:, None, None])
    lab = np.where(left, SIDEWALK, lab)
    lab = np.where(right, np.where(rng.random(n) < green, TERRAIN, SIDEWALK)[:, None, None], lab)
    h0 = horizon[:, 0, 0]
    for _ in range(6):  # cars and trucks, bigger when nearer
        y0 = (h0 + rng.uniform(0, 1, n) * (h * 0.85 - h0)).astype(int)
        scale = (y0 - h0 + 2) / np.maximum(1, h - h0)
        cw = np.maximum(1, (w * 0.25 * scale * rng.uniform(0.6, 1.2, n)).astype(int))
        ch = np.maximum(1, (h * 0.2 * scale).astype(int))
        x0 = (rng.random(n) * np.maximum(1, w - cw)).astype(int)
        box = ((rng.random(n) < 0.6)[:, None, None] & (ys > (y0 - ch)[:, None, None]) & (ys <= y0[:, None, None])
               & (xs >= x0[:, None, None]) & (xs < (x0 + cw)[:, None, None]))
        lab = np.where(box, np.where(rng.random(n) < 0.85, CAR, TRUCK)[:, None, None], lab)
    for _ in range(5):  # poles, signs, lights, people, fences
        pw = np.maximum(1, (w * rng.uniform(0.01, 0.05, n)).astype(int))
        ph = np.maximum(1, (h * rng.uniform(0.05, 0.4, n)).astype(int))
        x0, y0 = (rng.random(n) * (w - pw)).astype(int), (rng.random(n) * (h - ph)).astype(int)
        cls = rng.choice(np.array([POLE, SIGN, LIGHT, PERSON, RIDER, FENCE, WALL]), n)[:, None, None]
        box = ((rng.random(n) < 0.7)[:, None, None] & (ys >= y0[:, None, None]) & (ys < (y0 + ph)[:, None, None])
               & (xs >= x0[:, None, None]) & (xs < (x0 + pw)[:, None, None]))
        lab = np.where(box, cls, lab)
    ego = ((ys - h) ** 2 / (h / 8) ** 2 + (xs - w / 2) ** 2 / (w / 2) ** 2) <= 1
    return np.where(ego, 255, lab).astype(np.uint8)


def spfeat_batch(labels: np.ndarray, num_classes: int = 19, levels=DEFAULT_LEVELS) -> np.ndarray:
    """SP-Feat of a stack of label maps (as spfeat(), for sides divisible by the finest level)."""
    n, h, w = labels.shape
    fine = max(levels)
    cell = ((np.arange(h) * fine // h)[:, None] * fine + (np.arange(w) * fine // w)[None, :])[None]
    valid = labels < num_classes
    code = (np.arange(n)[:, None, None] * fine * fine + cell) * num_classes + np.minimum(labels, num_classes - 1)
    counts = np.bincount(code[valid], minlength=n * fine * fine * num_classes)
    counts = counts.reshape(n, fine, fine, num_classes).astype(np.float64)
    parts = []
    for level in levels:
        f = fine // level
        hist = counts.reshape(n, level, f, level, f, num_classes).sum(axis=(2, 4))
        total = hist.sum(-1, keepdims=True)
        parts.append(np.divide(hist, total, out=np.zeros_like(hist), where=total > 0).reshape(n, -1))
    return np.concatenate(parts, 1).astype(np.float32)


def spfeat_like(n: int, seed: int, green: float, noise: float = 0.1, num_classes: int = 19) -> np.ndarray:
    """n SP-Feat-like vectors: layouts' SP-Feat, each slice blended ``noise`` with a random two-class histogram."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n, 5000):
        x = spfeat_batch(street_layouts(min(5000, n - start), rng, green=green), num_classes)
        cells = x.shape[1] // num_classes
        hist = x.reshape(len(x), cells, num_classes)
        extra = np.zeros_like(hist)
        share = rng.random((len(x), cells, 1)).astype(np.float32)
        np.put_along_axis(extra, rng.integers(0, num_classes, (len(x), cells, 1)), share, axis=2)
        second = rng.integers(0, num_classes, (len(x), cells, 1))
        np.put_along_axis(extra, second, np.take_along_axis(extra, second, 2) + 1 - share, axis=2)
        filled = hist.sum(-1, keepdims=True) > 0
        out.append(np.where(filled, (1 - noise) * hist + noise * extra, hist).reshape(len(x), -1))
    return np.concatenate(out).astype(np.float32)


def _pairing_at_scale(args) -> dict:
    """In its own process: pair n_real x n_synthetic SP-Feat-like vectors; time, rounds, peak RSS."""
    import torch

    import s2rcli.data.pairing as pairing

    n_real, n_syn, shift, threads, k = args
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    synthetic = spfeat_like(n_syn, 1, green=0.15)
    real = spfeat_like(n_real, 2, green=0.5 if shift else 0.15)
    made = time.perf_counter() - t0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rounds = []
    query = pairing.NearestSynthetic.query_edges

    def timed_query(self, rows, m, usable):
        t = time.perf_counter()
        out = query(self, rows, m, usable)
        rounds.append((len(rows), m, time.perf_counter() - t))
        return out

    pairing.NearestSynthetic.query_edges = timed_query
    t0, c0 = time.perf_counter(), time.process_time()
    result = pairing.pair_features(real, synthetic, k)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"real": n_real, "synthetic": n_syn, "shift": shift, "made_s": made, "wall_s": wall, "cpu_s": cpu,
            "deeper_rounds": rounds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vectors_mb": before, "features_mb": (n_real + n_syn) * synthetic.shape[1] * 4 / 2**20,
            "coverage": result.coverage, "plain_coverage": result.plain_coverage, "max_uses": result.max_uses,
            "candidates": result.candidates, "replaced": result.replaced, "over_quota": result.over_quota,
            "nonzero": float((synthetic > 0).mean())}


def bench_scale(scales: str, shift: bool, threads: int, k: int) -> None:
    for scale in scales.split(","):
        n_real, n_syn = (int(v) for v in scale.lower().split("x"))
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            r = pool.apply(_pairing_at_scale, ((n_real, n_syn, shift, threads, k),))
        deeper = "; ".join(f"{rows} rows to depth {m}: {s:.1f} s" for rows, m, s in r["deeper_rounds"]) or "none"
        print(f"KNN pairing at scale: {n_real} real x {n_syn} synthetic SP-Feat-like vectors (399 dims, "
              f"{100 * r['nonzero']:.0f}% non-zero{', real layouts greener: a domain gap' if shift else ''}), K={k}, "
              f"{threads} torch threads")
        print(f"  pairing time                  : {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (target < 60 s); "
              f"making the vectors took {r['made_s']:.1f} s, not counted")
        print(f"  deeper rounds                 : {deeper}")
        print(f"  peak RSS                      : {r['peak_mb']:.0f} MiB, of which {r['vectors_mb']:.0f} MiB before "
              f"pairing (interpreter, libraries, the vectors: {r['features_mb']:.0f} MiB of features)")
        print(f"  coverage                      : {100 * r['coverage']:.1f}% (plain KNN {100 * r['plain_coverage']:.1f}%), "
              f"max uses {r['max_uses']}, {r['replaced']} slots replaced, {r['over_quota']} over quota, "
              f"deepest search {r['candidates']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--real", type=int, default=3000)
    parser.add_argument("--synthetic", type=int, default=25000)
    parser.add_argument("-k", type=int, default=15)
    parser.add_argument("--scale", default=None, help="REALxSYNTHETIC[,...]: pairing at scale, e.g. 25000x250000")
    parser.add_argument("--shift", action="store_true", help="--scale: real layouts greener than synthetic ones")
    parser.add_argument("--only-scale", action="store_true", help="skip parts 1-3")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the pairing at scale")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")
    if not args.only_scale:
        bench_spfeat(args.images)
        bench_pairing(args.real, args.synthetic, args.k)
    if args.scale:
        bench_scale(args.scale, args.shift, args.threads, args.k)
    print(f"load average at end {os.getloadavg()[0]:.1f} (timings are only comparable on a quiet machine)")


if __name__ == "__main__":
    main()
