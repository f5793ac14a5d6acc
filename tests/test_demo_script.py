"""The closing summary of ``examples/demo.py`` (what `make demo` prints): values and verdicts."""

import importlib.util
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("s2r_demo_script", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _downstream(raw: float, unit: float, real: float, gap: float | None) -> dict:
    return {"rows": [{"name": "raw", "miou_mean": raw, "gap_closed_mean": None},
                     {"name": "unit", "miou_mean": unit, "gap_closed_mean": gap},
                     {"name": "real", "miou_mean": real, "gap_closed_mean": None}]}


def test_summary_says_translated_is_better_when_it_is(demo):
    rows = demo.summary_rows({"raw": 0.57, "translated": 0.31},
                             {"raw": {"miou": 0.20}, "translated": {"miou": 0.35}},
                             _downstream(0.10, 0.22, 0.34, 0.5))
    by_measure = {r[0].split(" (")[0]: r for r in rows}
    assert by_measure["FID vs real images"][1:] == ("0.570", "0.310", "translated is better")
    assert by_measure["content mIoU %"][1:] == ("20.0", "35.0", "translated is better")
    seg = next(r for r in rows if r[0].startswith("segmenter mIoU"))
    assert seg[1:] == ("10.0", "22.0", "translated is better") and "real-trained: 34.0" in seg[0]
    assert rows[-1] == ("share of the raw-to-real gap closed", "0%", "50%", "")


def test_summary_says_plainly_when_translation_hurts(demo):
    rows = demo.summary_rows({"raw": 0.30, "translated": 0.45},
                             {"raw": {"miou": 0.40}, "translated": {"miou": 0.25}}, None)
    assert len(rows) == 2  # no downstream rows without the comparison
    assert all(r[3].startswith("raw is better") for r in rows)


def test_summary_without_a_defined_gap_has_no_gap_row(demo):
    rows = demo.summary_rows({"raw": 1.0, "translated": 0.5}, {"raw": {"miou": 0.1}, "translated": {"miou": 0.2}},
                             _downstream(0.10, 0.08, 0.10, None))
    assert not any(r[0].startswith("share of") for r in rows)
    assert next(r for r in rows if r[0].startswith("segmenter"))[3].startswith("raw is better")


def test_translation_grid_puts_each_input_beside_its_translation(demo, tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    (tmp_path / "tr" / "images").mkdir(parents=True)
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (16, 8), colour).save(tmp_path / "in" / f"{i:05d}.png")            # inputs at another size
        Image.new("RGB", (8, 4), tuple(255 - c for c in colour)).save(tmp_path / "tr" / "images" / f"{i:05d}.png")
    out = demo.translation_grid(tmp_path / "in", tmp_path / "tr", tmp_path / "grid.png", rows=2)
    grid = Image.open(out)
    assert grid.size == (2 * 8 + 3 * 2, 2 * (4 + 2) + 2)           # two rows, two columns, 2-pixel padding
    assert grid.getpixel((2 + 4, 2 + 2)) == (255, 0, 0)            # row 0: input | translated
    assert grid.getpixel((4 + 8 + 4, 2 + 2)) == (0, 255, 255)
    assert grid.getpixel((2 + 4, 2 + 6 + 2)) == (0, 255, 0)        # row 1
    assert not list(tmp_path.glob("*.tmp.png"))


def test_run_state_tells_a_stopped_run_from_a_finished_one(demo, tmp_path):
    import json

    from s2rcli.checkpoint import make_checkpoint, save_checkpoint

    run = tmp_path / "unit"
    assert demo.run_state(run) == "missing"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"steps": 4}}))
    ckpt = dict(model="unit", model_kwargs={}, state_dicts={})
    save_checkpoint(make_checkpoint(**ckpt, step=2), run / "checkpoints" / "latest.pt")
    assert demo.run_state(run) == "stopped"          # the demo resumes it rather than translating with it
    save_checkpoint(make_checkpoint(**ckpt, step=4), run / "checkpoints" / "latest.pt", overwrite=True)
    assert demo.run_state(run) == "finished"
    assert demo.run_state(run, steps=6) == "stopped"  # `examples/demo.py --steps 6` asks for more
