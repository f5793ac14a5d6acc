"""Segmenters train through the one engine: `s2r train`, the same config, checkpoint,
metrics and exact resume as every model; train-and-test is a thin caller of it."""

import json

import pytest
import torch
from typer.testing import CliRunner

from s2rcli.checkpoint import load_checkpoint
from s2rcli.cli.app import app
from s2rcli.data.demo import write_demo_world
from s2rcli.training.loop import Observer
from s2rcli.training.runner import train_run

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_world")
    write_demo_world(root, n_synthetic=6, n_real=4, n_real_val=4, size=(32, 64), seed=0)
    return {"syn": f"demo:{root}?split=synthetic", "val": f"demo:{root}?split=real_val"}


# Bit-exact continuation holds for one thread count: every run here uses one thread.
THREADS = ["--threads", "1"]


def _train(world, out, steps, *extra):
    return runner.invoke(app, ["--quiet", "train", "fastseg", *THREADS, "--preset", "tiny", "--data", f"train={world['syn']}",
                               "--size", "32x64", "--batch-size", "2", "--steps", str(steps), "--out", str(out),
                               "--set", "train.checkpoint_every=1", *extra])


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["S/ce"] for r in rows if "S/ce" in r}


def test_segmenter_trains_with_s2r_train_and_resumes_exactly(world, tmp_path):
    full = _train(world, tmp_path / "full", 4, "--set", "train.log_every=1")
    assert full.exit_code == 0, full.output
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg["model"] == "fastseg" and cfg["data"]["train"] == [world["syn"]]
    assert cfg["model_kwargs"]["num_classes"] == 19

    # the same 4-step run, killed after step 2 (its checkpoint is written every step), then resumed
    class Kill(Observer):
        def on_step_end(self, state, terms):
            if state.step == 2:
                raise KeyboardInterrupt

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run("fastseg", tmp_path / "split", preset="tiny", sets=["train.checkpoint_every=1", "train.log_every=1"],
                      options={"data.train": [world["syn"]], "data.size": [32, 64], "train.batch_size": 2,
                               "train.steps": 4}, extra_observers=[Kill()], device=torch.device("cpu"))
    finally:
        torch.set_num_threads(previous)
    assert load_checkpoint(tmp_path / "split")["step"] == 2
    again = runner.invoke(app, ["--quiet", "train", "fastseg", *THREADS, "--out", str(tmp_path / "split"), "--resume"])
    assert again.exit_code == 0, again.output

    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(a[k] == b[k] for k in a), (a, b)  # bit-identical continuation
    wa = load_checkpoint(tmp_path / "full")["state_dicts"]["S"]
    wb = load_checkpoint(tmp_path / "split")["state_dicts"]["S"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_and_test_is_a_run_with_config_set_and_resume(world, tmp_path):
    out = tmp_path / "tt"
    args = ["--quiet", "segment-eval", "train-and-test", "--train", world["syn"], "--test", world["val"],
            "--out", str(out), "--size", "32x64", "--batch-size", "2", "--json"]
    result = runner.invoke(app, [*args, "--steps", "2", "--set", "train.lr=0.001"])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["lr"] == 0.001 and cfg["train"]["steps"] == 2
    assert (out / "results.json").exists() and load_checkpoint(out)["step"] == 2
    more = runner.invoke(app, [*args, "--steps", "3", "--resume"])
    assert more.exit_code == 0, more.output
    assert load_checkpoint(out)["step"] == 3
    assert json.loads((out / "results.json").read_text())["steps"] == 3


def test_data_role_must_exist(world, tmp_path):
    result = runner.invoke(app, ["train", "fastseg", "--data", f"synthetic={world['syn']}", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "trains on roles train" in result.output
