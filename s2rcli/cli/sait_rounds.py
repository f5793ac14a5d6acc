"""``s2r sait-rounds``: alternate SAIT's two stages for a number of rounds (a thin wrapper)."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from ..console import settings, stdout
from ..device import resolve_device
from ..sait_rounds import sait_rounds as run_rounds
from ..utils.sizes import parse_size


def sait_rounds(
    synthetic: str = typer.Option(..., "--synthetic", metavar="SPEC", help="Synthetic (source) dataset spec, with labels."),
    real: str = typer.Option(..., "--real", metavar="SPEC", help="Real (target) dataset spec; its labels are not used."),
    segmenter: str = typer.Option(..., "--segmenter", metavar="CKPT", help="The starting segmenter (checkpoint or run "
                                                                          "folder), e.g. trained on raw synthetic."),
    out: str = typer.Option(..., "--out", metavar="PATH", help="Folder of the rounds: round_K/{sait,translated,adapt}, rounds.json."),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Rounds of translator -> translation -> adaptation."),
    test: Optional[str] = typer.Option(None, "--test", metavar="SPEC", help="Labelled real spec to test each round's "
                                                                           "adapted segmenter on (round_K/results.json)."),
    preset: str = typer.Option("tiny", "--preset", help="Preset of both stages: tiny (CPU, demo) or paper."),
    size: Optional[str] = typer.Option(None, "--size", metavar="HxW", help="Training and translation size (default: the presets')."),
    seed: int = typer.Option(0, "--seed", help="Seed of every stage."),
    sait_steps: Optional[int] = typer.Option(None, "--sait-steps", min=1, help="Translator steps per round (default: the preset's)."),
    adapt_steps: Optional[int] = typer.Option(None, "--adapt-steps", min=1, help="Adaptation steps per round (default: the preset's)."),
    sait_set: Optional[List[str]] = typer.Option(None, "--sait-set", metavar="KEY=VALUE", help="Config override of the translator runs."),
    adapt_set: Optional[List[str]] = typer.Option(None, "--adapt-set", metavar="KEY=VALUE", help="Config override of the adaptation runs."),
    smart_batch: bool = typer.Option(False, "--smart-batch", help="Pair the translator's images with the SP-Feat smart batch loader."),
    pairs: Optional[str] = typer.Option(None, "--pairs", metavar="PATH", help="Pairs file from `s2r prepare pairs` (--smart-batch)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (OUT/rounds.json) on stdout."),
) -> None:
    """Alternate SAIT's stages: translator guided by the segmenter, translation, adaptation, new pseudo-labels, ...

    Every stage is an ordinary run under OUT/round_K/, so the same command resumes a killed
    driver: finished stages are skipped and a stopped run continues exactly.
    """
    summary = run_rounds(out, synthetic=synthetic, real=real, segmenter=segmenter, rounds=rounds, test=test,
                         preset=preset, size=parse_size(size), seed=seed, sait_steps=sait_steps,
                         adapt_steps=adapt_steps, sait_sets=sait_set or [], adapt_sets=adapt_set or [],
                         smart_batch=smart_batch, pairs=pairs, device=resolve_device(settings.device))
    if as_json:
        stdout.print(json.dumps(summary, indent=2), markup=False, highlight=False)


EXAMPLE = ("Example: s2r sait-rounds --synthetic demo:demo?split=synthetic --real demo:demo?split=real "
           "--segmenter runs/seg_raw --test demo:demo?split=real_val --out runs/sait_rounds --rounds 2")


def register(app: typer.Typer) -> None:
    app.command("sait-rounds", no_args_is_help=True, epilog=EXAMPLE)(sait_rounds)
