"""Benchmark reading labels through a dataset adapter: decode + remap vs decode only, and the label writer.

Writes GTA5-layout palette PNG labels at GTA5's resolution (1052 x 1914; Cityscapes labelIds
from demo-world street layouts, Cityscapes palette) into a temp dir, then times, on the same files
in the same run, alternating rounds:

  decode only        np.asarray(PIL.Image.open(label))                 (what any loader pays)
  read + remap       Dataset.read_label(i): decode, LUT into cityscapes19 trainIds, unknown-value
                     check, label/image size check (header read)
  numpy lut[label]   decode + numpy fancy-index LUT, for comparison
  remap, Pillow PNG  what `s2r prepare remap` did per file before: read + remap, then Pillow's PNG
                     encoder at level 1 (no disk write: the encoding is the CPU cost)
  remap, label PNG   what it does now: read + remap, then remap.encode_label_png (up-filter, RLE)

Target: read + remap adds at most 10% over decode only. Prints label maps/s and the ratio, from the
median of the rounds of the CPU time of this process: on a machine shared with other work, wall time
swings by 2x between identical passes, CPU time much less. OpenCV runs the lookup on --cv2-threads
threads (default 1, as in `prepare remap`'s worker processes; every thread's CPU time counts).

Usage: python benchmarks/bench_data.py [--files 32] [--rounds 7] [--cv2-threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from s2rcli.data import io
from s2rcli.data.datasets import open_dataset
from s2rcli.data.demo import render_scene, MATERIAL_TRAIN_ID
from s2rcli.data.labels import conversion_lut, get_label_space
from s2rcli.data.remap import encode_label_png

TARGET = 0.10

HEIGHT, WIDTH = 1052, 1914


def write_fixture(root: Path, files: int, seed: int = 0) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    to_label_ids = conversion_lut("cityscapes19", "cityscapes34")
    palette = get_label_space("cityscapes34").palette().ravel().tolist()
    flat = Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90))  # image content is irrelevant: only its header is read
    distinct = 8
    scenes = []
    for k in range(distinct):
        canvas = render_scene(np.random.default_rng([seed, k]), HEIGHT, WIDTH, urban=k % 2 == 0)
        ids = to_label_ids[MATERIAL_TRAIN_ID[canvas.mat]]
        ids[-HEIGHT // 10:, WIDTH // 4: 3 * WIDTH // 4] = 1  # ego vehicle, as GTA5 frames have
        scenes.append(ids)
    for i in range(files):
        ids = np.roll(scenes[i % distinct], 37 * (i // distinct), axis=1)
        label = Image.fromarray(np.ascontiguousarray(ids))
        label.putpalette(palette)
        label.save(root / "labels" / f"{i + 1:05d}.png")
        flat.save(root / "images" / f"{i + 1:05d}.png")


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def timed(fn, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for fn(0..n-1)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cv2-threads", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(args.cv2_threads)
    print(f"OpenCV threads: {cv2.getNumThreads()}; load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "gta5"
        t0 = time.perf_counter()
        write_fixture(root, args.files)
        print(f"wrote {args.files} palette label PNGs at {HEIGHT}x{WIDTH} in {time.perf_counter() - t0:.1f} s")
        ds = open_dataset(f"gta5:{root}")
        paths = [s.label for s in ds.samples]
        lut = ds.lut

        def decode(i):
            return np.asarray(Image.open(paths[i]))

        def numpy_lut(i):
            return lut[np.asarray(Image.open(paths[i]))]

        def remap_pillow(i):
            return io.encode_png(ds.read_label(i))

        def remap_label_png(i):
            return encode_label_png(ds.read_label(i))

        # Same answer every way, before timing anything (the written label decodes to the same map).
        np.testing.assert_array_equal(ds.read_label(0), numpy_lut(0))
        np.testing.assert_array_equal(io.read_index_label(write_bytes(Path(tmp) / "l.png", remap_label_png(0))),
                                      ds.read_label(0))
        passes = {"decode only": decode, "read + remap": ds.read_label, "numpy lut[label]": numpy_lut,
                  "remap, Pillow PNG": remap_pillow, "remap, label PNG": remap_label_png}
        sizes = {name: len(fn(0)) for name, fn in (("Pillow", remap_pillow), ("label", remap_label_png))}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in passes}
        decode(0)
        for _ in range(args.rounds):  # alternate, so drift in machine load hits every pass alike
            for name, fn in passes.items():
                times[name].append(timed(fn, len(paths)))
        cpu = {name: float(np.median([t[0] for t in ts])) for name, ts in times.items()}
        wall = {name: float(np.median([t[1] for t in ts])) for name, ts in times.items()}
        print(f"median of {args.rounds} rounds over {len(paths)} files; CPU time of this process (wall time in brackets)")
        print(f"{'pass':<18}{'maps/s':>10}{'ms/map':>10}{'vs decode':>12}{'wall maps/s':>16}{'wall vs decode':>16}")
        for name in passes:
            rate, wall_rate = len(paths) / cpu[name], len(paths) / wall[name]
            print(f"{name:<18}{rate:>10.1f}{1000 / rate:>10.2f}{cpu[name] / cpu['decode only']:>11.3f}x"
                  f"{wall_rate:>16.1f}{wall[name] / wall['decode only']:>15.3f}x")
        for label, table in (("CPU", cpu), ("wall", wall)):
            overhead = table["read + remap"] / table["decode only"] - 1
            verdict = "OK" if overhead <= TARGET else "ABOVE TARGET"
            print(f"read + remap overhead over decode only ({label} time): {100 * overhead:+.1f}% "
                  f"(target <= {100 * TARGET:.0f}%): {verdict}")
        print(f"per-file remap with the label PNG writer: x{cpu['remap, Pillow PNG'] / cpu['remap, label PNG']:.2f} "
              f"faster than with Pillow's (CPU time); written label {sizes['label'] / 1024:.1f} KiB "
              f"against {sizes['Pillow'] / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
