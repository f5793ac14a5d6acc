"""Content preservation during training: a real-trained segmenter scores the preview translations."""

import json

import pytest
import torch

from s2rcli.checkpoint import make_checkpoint, save_checkpoint
from s2rcli.data.demo import write_demo_world
from s2rcli.errors import S2RError
from s2rcli.models import create_model
from s2rcli.training.content import ContentObserver
from s2rcli.training.runner import train_run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("content_world")
    write_demo_world(root, n_synthetic=4, n_real=4, n_real_val=1, size=(32, 64), seed=0, workers=1)
    return root


def _segmenter(path, num_classes=19):
    net = create_model("fastseg", preset="tiny", num_classes=num_classes)
    return save_checkpoint(make_checkpoint(model="fastseg", model_kwargs={"num_classes": num_classes,
                           "widths": [8, 32, 64], "encoder_blocks": [2, 4], "decoder_blocks": [1, 1],
                           "dropout": [0.0, 0.0]}, state_dicts={"S": net.state_dict()},
                           label_space="cityscapes19"), path)


def test_content_is_logged_on_the_preview_batch(world, tmp_path):
    seg = _segmenter(tmp_path / "seg.pt")
    run = tmp_path / "run"
    obs = ContentObserver(run, seg, every=2, n=3)
    train_run("unit", run, preset="tiny",
              options={"data.synthetic": f"demo:{world}?split=synthetic", "data.real": f"demo:{world}?split=real",
                       "data.size": [32, 64], "train.steps": 4}, extra_observers=[obs], device=torch.device("cpu"))
    rows = [json.loads(line) for line in (run / "content.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0.0 <= r["content_miou"] <= 1.0 for r in rows) and "road" in rows[0]["per_class_iou"]
    assert obs.images.shape == (3, 3, 32, 64) and len(obs.labels) == 3


def test_content_segmenter_must_be_a_segmenter(tmp_path):
    unit = create_model("unit", preset="tiny")
    path = save_checkpoint(make_checkpoint(model="unit", model_kwargs={}, state_dicts={"G": unit.G.state_dict()}),
                           tmp_path / "u.pt")
    with pytest.raises(S2RError, match="not a segmenter"):
        ContentObserver(tmp_path / "run", path)


def test_translate_reports_content_preservation(world, tmp_path):
    from typer.testing import CliRunner

    from s2rcli.cli.app import app

    runner = CliRunner()
    unit = create_model("unit", preset="tiny")
    ckpt = save_checkpoint(make_checkpoint(model="unit", model_kwargs=dict(
        channels=16, n_down=2, n_res=2, n_shared=1, share=True, d_channels=16, d_layers=3, d_scales=3),
        state_dicts={"G": unit.G.state_dict(), "D": unit.D.state_dict()}), tmp_path / "unit.pt")
    seg = _segmenter(tmp_path / "seg.pt")
    out = tmp_path / "out"
    result = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", f"demo:{world}?split=synthetic",
                                 "--output", str(out), "--segmenter", str(seg)])
    assert result.exit_code == 0, result.output
    content = json.loads((out / "content.json").read_text())
    assert set(content) == {"segmenter", "translated", "raw"}
    for key in ("translated", "raw"):
        assert 0.0 <= content[key]["miou"] <= 1.0 and "road" in content[key]["per_class_iou"]
    assert "content preservation" in result.output and "raw input" in result.output
    missing = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", f"demo:{world}?split=synthetic",
                                  "--output", str(tmp_path / "out2"), "--segmenter", str(tmp_path / "none.pt")])
    assert missing.exit_code == 1 and not (tmp_path / "out2").exists()  # checked before translating


def test_train_cli_takes_a_content_segmenter(world, tmp_path):
    from typer.testing import CliRunner

    from s2rcli.cli.app import app

    seg = _segmenter(tmp_path / "seg.pt")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["--quiet", "train", "unit", "--preset", "tiny", "--synthetic",
                                      f"demo:{world}?split=synthetic", "--real", f"demo:{world}?split=real",
                                      "--size", "32x64", "--steps", "2", "--set", "train.sample_every=1",
                                      "--content-segmenter", str(seg), "--out", str(run)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "content.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
