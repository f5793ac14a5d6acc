"""``s2r segment-eval compare``: does translation help a segmenter on real images?

The same segmenter (model, preset, steps, size, seed) is trained on the raw
synthetic set, on each translated set and on the labelled real training set
(the oracle), and every one is tested on the real test set. The table gives
each translation's mIoU and the share of the raw -> oracle gap it closes,
``(mIoU_translated - mIoU_raw) / (mIoU_oracle - mIoU_raw)``, per seed and on
average, plus per-class IoU.

Every training is an ordinary run (``OUT/<name>_s<seed>/``) through the
training engine: a run that finished is reused, one that was stopped resumes
exactly, so the whole comparison resumes after a kill. ``OUT/compare.json``
holds everything; ``OUT/compare.png`` is a bar chart of mIoU per training set.

>>> compare("demo:w?split=synthetic", ["unit=folder:translated"], "demo:w?split=real",
...         "demo:w?split=real_val", "runs/compare", seeds=(0, 1))
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoint import load_checkpoint
from .console import info, warn
from .errors import S2RError
from .evaluation import train_and_test
from .utils.atomic import atomic_path, atomic_write_json

RAW, ORACLE = "raw", "real"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_named(values: Sequence[str]) -> list[tuple[str, str]]:
    """``["unit=folder:out/unit", "out/sis"]`` -> ``[("unit", "folder:out/unit"), ("sis", "out/sis")]``.

    A value without ``NAME=`` is named after its folder. Names must be unique and
    cannot be ``raw`` or ``real`` (the baselines).
    """
    named = []
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or ":" in name or "/" in name:
            spec = value
            name = Path(spec.split(":", 1)[-1].split("?", 1)[0].rstrip("/")).name or "translated"
        if not _NAME.match(name):
            raise S2RError(f"--translated {value!r}: the name {name!r} may hold letters, digits, '.', '_' and '-' only",
                           hint="give a name: --translated NAME=SPEC")
        named.append((name, spec))
    names = [n for n, _ in named]
    clash = sorted({n for n in names if names.count(n) > 1 or n in (RAW, ORACLE)})
    if clash:
        raise S2RError(f"--translated names must be unique and not raw/real: {', '.join(clash)}",
                       hint="name each set: --translated NAME=SPEC")
    return named


def gap_closed(miou: float, raw: float, oracle: float) -> float | None:
    """Share of the raw -> oracle gap closed (``None`` when the oracle is no better than raw)."""
    return None if oracle - raw <= 1e-9 else (miou - raw) / (oracle - raw)


def _run(name: str, spec: str, test: str, out: Path, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """One training and test, reused when finished and resumed when stopped."""
    run = out / f"{name}_s{seed}"
    results = run / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    resume = (run / "checkpoints" / "latest.pt").is_file()
    if resume:
        step = load_checkpoint(run / "checkpoints" / "latest.pt").get("step")
        info(f"{name}, seed {seed}: resuming at step {step}")
    return train_and_test([spec], test, out=run, seed=seed, resume=resume, **options)


def compare(
    synthetic: str,
    translated: Sequence[str],
    real_train: str,
    test: str,
    out: str | Path,
    *,
    model: str = "fastseg",
    preset: str = "tiny",
    steps: int | None = None,
    size: tuple[int, int] | None = None,
    seeds: Sequence[int] = (0,),
    label_space: str = "cityscapes19",
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train the same segmenter on raw synthetic, each translated set and real; test each on ``test``.

    Args:
        translated: ``NAME=SPEC`` (or a folder/spec, named after its folder) per translated set;
            ``s2r translate`` output folders carry their labels, so ``folder:OUT`` works.
        seeds: each row is trained once per seed; the gap closed is computed per seed.
    Returns the comparison written to ``OUT/compare.json``.
    """
    out = Path(out)
    sets = [(RAW, synthetic), *parse_named(translated), (ORACLE, real_train)]
    seeds = [int(s) for s in seeds] or [0]
    options = {"model": model, "preset": preset, "steps": steps, "size": size, "label_space": label_space,
               "device": device}
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[int, dict[str, Any]]] = {name: {} for name, _ in sets}
    total, k = len(sets) * len(seeds), 0
    for seed in seeds:
        for name, spec in sets:
            k += 1
            info(f"[{k}/{total}] {name} (seed {seed}): training {model} on {spec}")
            rows[name][seed] = _run(name, spec, test, out, seed, options)["scores"]
    table = []
    for name, spec in sets:
        per_seed = {seed: rows[name][seed]["miou"] for seed in seeds}
        gaps = {seed: gap_closed(per_seed[seed], rows[RAW][seed]["miou"], rows[ORACLE][seed]["miou"])
                for seed in seeds} if name not in (RAW, ORACLE) else {}
        valid = [g for g in gaps.values() if g is not None]
        table.append({
            "name": name, "spec": spec, "miou": per_seed, "miou_mean": sum(per_seed.values()) / len(per_seed),
            "gap_closed": gaps, "gap_closed_mean": sum(valid) / len(valid) if valid else None,
            "per_class_iou": _mean_per_class([rows[name][seed]["per_class_iou"] for seed in seeds]),
        })
    if any(gap_closed(0.0, rows[RAW][s]["miou"], rows[ORACLE][s]["miou"]) is None for s in seeds):
        warn("the real (oracle) segmenter is no better than the raw-synthetic one: the gap closed is undefined")
    result = {"test": test, "model": model, "preset": preset, "seeds": seeds, "rows": table}
    atomic_write_json(out / "compare.json", result, overwrite=True)
    bar_chart(result, out / "compare.png")
    return result


def _mean_per_class(dicts: list[dict[str, float | None]]) -> dict[str, float | None]:
    out = {}
    for name in dicts[0]:
        values = [d.get(name) for d in dicts if d.get(name) is not None and not math.isnan(d.get(name))]
        out[name] = sum(values) / len(values) if values else None
    return out


def bar_chart(result: dict[str, Any], path: Path) -> Path:
    """mIoU per training set (mean over seeds, seeds as dots), with the gap closed written on each bar."""
    # matplotlib is imported here: it is needed only for this figure, and costs a second at import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["rows"]
    fig = Figure(figsize=(1.6 + 1.1 * len(rows), 3.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#999999"] + ["#3b7dd8"] * (len(rows) - 2) + ["#2a9d5b"]
    for i, row in enumerate(rows):
        ax.bar(i, 100 * row["miou_mean"], color=colours[i], width=0.7)
        ax.plot([i] * len(row["miou"]), [100 * v for v in row["miou"].values()], "k.", ms=4)
        if row["gap_closed_mean"] is not None:
            ax.text(i, 100 * row["miou_mean"] + 0.5, f"{100 * row['gap_closed_mean']:.0f}%", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"mIoU % on {Path(result['test'].split(':', 1)[-1].split('?')[0]).name}")
    ax.set_title("segmenter trained on each set (% = share of the raw-to-real gap closed)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
