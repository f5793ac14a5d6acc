"""SAIT's rounds: translator and segmenter improve each other, stage after stage.

``s2r sait-rounds`` as a function. Each round k (1, 2, ...) writes ``OUT/round_k/``:

1. ``sait/``: a SAIT translator (``s2r train sait``) guided by the current
   segmenter: the one given for round 1, the previous round's adapted one after;
2. ``translated/``: the synthetic images translated to the real domain
   (``s2r translate``; their labels are carried along);
3. ``adapt/``: the current segmenter adapted on them (``s2r train adapt``), with
   new pseudo-labels made by it before training (``adapt/pseudo_labels/``);
4. ``results.json``: the adapted segmenter tested on ``test`` (when given).

Every stage is an ordinary run (or translate output), so a killed driver resumes
where it stopped: finished stages are skipped, a stopped training run continues
with ``--resume`` (exactly), and a stopped translation keeps the images its
manifest vouches for. ``OUT/rounds.json`` sums up the rounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoint import load_checkpoint
from .console import info
from .errors import S2RError
from .evaluation import evaluate_segmenter
from .inference import read_translate_manifest, translate_dataset
from .training.runner import latest_checkpoint, train_run
from .utils.atomic import atomic_write_json


def sait_rounds(
    out: str | Path,
    *,
    synthetic: str,
    real: str,
    segmenter: str | Path,
    rounds: int = 2,
    test: str | None = None,
    preset: str = "tiny",
    size: Sequence[int] | None = None,
    seed: int = 0,
    sait_steps: int | None = None,
    adapt_steps: int | None = None,
    sait_sets: Sequence[str] = (),
    adapt_sets: Sequence[str] = (),
    smart_batch: bool = False,
    pairs: str | None = None,
    translate_batch: int = 8,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``rounds`` rounds of translator -> translation -> adaptation in ``out``.

    Args:
        synthetic, real: dataset specs (the synthetic set must have labels).
        segmenter: the starting segmenter checkpoint (e.g. trained on raw synthetic).
        test: a labelled real spec to test each round's adapted segmenter on.
        size: training and translation size ``(H, W)``; default the presets'.
        sait_sets, adapt_sets: ``--set`` overrides for the two stages.

    Returns the summary also written to ``OUT/rounds.json``.
    """
    if rounds < 1:
        raise S2RError(f"--rounds must be at least 1, got {rounds}")
    out = Path(out)
    if not Path(segmenter).exists():
        raise S2RError(f"--segmenter {segmenter}: no such file or folder", hint="pass a segmenter checkpoint or its run folder")
    device = device or torch.device("cpu")
    common = {"data.size": list(size) if size else None, "seed": seed}
    current = Path(segmenter)
    summary: dict[str, Any] = {"synthetic": synthetic, "real": real, "segmenter": str(segmenter), "rounds": []}
    for k in range(1, rounds + 1):
        folder = out / f"round_{k}"
        info(f"round {k} of {rounds}: translator guided by {current}")
        _train_stage("sait", folder / "sait", sets=sait_sets, preset=preset, device=device, options={
            **common, "data.synthetic": synthetic, "data.real": real, "train.segmenter": str(current),
            "train.steps": sait_steps, "data.smart_batch": True if smart_batch else None, "data.pairs": pairs})
        translated = folder / "translated"
        _translate_stage(folder / "sait", synthetic, translated, size=size, batch_size=translate_batch, device=device)
        _train_stage("adapt", folder / "adapt", sets=adapt_sets, preset=preset, device=device, options={
            **common, "data.source": f"folder:{translated}", "data.real": real, "train.segmenter": str(current),
            "train.pseudo_labels": str(folder / "adapt" / "pseudo_labels"), "train.steps": adapt_steps})
        current = folder / "adapt"
        record: dict[str, Any] = {"round": k, "sait": str(folder / "sait"), "translated": str(translated),
                                  "adapt": str(current)}
        if test:
            result = evaluate_segmenter(current, test, device=device)
            atomic_write_json(folder / "results.json", result, overwrite=True)
            record["miou"] = result["scores"]["miou"]
            info(f"round {k}: adapted segmenter mIoU on {test}: {100 * (record['miou'] or 0):.2f}")
        summary["rounds"].append(record)
        atomic_write_json(out / "rounds.json", summary, overwrite=True)
    summary["segmenter_out"] = str(latest_checkpoint(current))
    atomic_write_json(out / "rounds.json", summary, overwrite=True)
    return summary


def _train_stage(model: str, run_dir: Path, *, sets: Sequence[str], preset: str, options: dict[str, Any],
                 device: torch.device) -> None:
    """Train ``run_dir`` to its end: skip it when finished, resume it when stopped, else start it."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint.exists():
        ckpt = load_checkpoint(checkpoint)
        if int(ckpt["step"]) >= int(ckpt["config"]["train"]["steps"]):
            info(f"{run_dir}: finished ({ckpt['step']} steps), skipped")
            return
        info(f"{run_dir}: resuming at step {ckpt['step']}")
        state = train_run(model, run_dir, resume=True, device=device)
    else:
        state = train_run(model, run_dir, preset=preset, sets=sets, options=options, device=device)
    if state is None or state.status != "completed":
        raise S2RError(f"{run_dir} stopped at step {state.step if state else 0}",
                       hint="run the same command again to resume it")


def _translate_stage(run_dir: Path, synthetic: str, output: Path, *, size: Sequence[int] | None, batch_size: int,
                     device: torch.device) -> None:
    previous = read_translate_manifest(output) if output.exists() else None
    if previous is not None and previous.get("status") == "complete":
        info(f"{output}: translated, skipped")
        return
    translate_dataset(run_dir, synthetic, output, size=tuple(size) if size else None, batch_size=batch_size,
                      skip_existing=previous is not None, overwrite=previous is None and output.exists(),
                      device=device)
