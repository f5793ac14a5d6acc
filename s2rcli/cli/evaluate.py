"""``s2r segment-eval``: segmentation-based evaluation (score, train-and-test)."""

from __future__ import annotations

import typer

from ..errors import NotYetAvailable

segment_app = typer.Typer(no_args_is_help=True, help="Segmentation-based evaluation: score images, or train and test a segmenter.")


@segment_app.command("score", epilog="Example: s2r segment-eval score --images generated/ --labels demo:demo?split=synthetic --segmenter seg.pt")
def score(images: str = typer.Option(..., "--images", help="Folder of generated images.")) -> None:
    """Segment generated images and compare with the labels they came from (mIoU, accuracy)."""
    raise NotYetAvailable("`s2r segment-eval score` is not available yet: it arrives with the evaluation tools")


@segment_app.command("train-and-test", epilog="Example: s2r segment-eval train-and-test --train translated/ --test demo:demo?split=real --model fastseg --steps 2000 --out runs/seg")
def train_and_test(out: str = typer.Option(..., "--out", help="Run folder.")) -> None:
    """Train a segmenter on one or more sets and report per-class IoU on a test set."""
    raise NotYetAvailable("`s2r segment-eval train-and-test` is not available yet: it arrives with the evaluation tools")


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment-eval")
