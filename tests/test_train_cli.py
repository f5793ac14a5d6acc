"""`s2r train`: config resolution, the run folder, exact resume, Ctrl-C, DDP, error paths."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data.sampler import RandomPairSampler
from s2rcli.errors import S2RError
from s2rcli.checkpoint import load_checkpoint
from s2rcli.models import model_from_checkpoint
from s2rcli.training.config import parse_size, resolve_config
from s2rcli.data.pair_source import PairDataSource
from s2rcli.training.loop import Observer
from s2rcli.training.runner import train_run

from toy_task import MemoryDataset, write_folder_world, one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
FAST = ["--preset", "tiny", "--size", "32x64", "--set", "train.sample_every=1000", "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_folder_world(tmp_path_factory.mktemp("world"), n=6, size=(40, 72))


def _lines(result):
    return [line for line in result.output.splitlines() if line.strip()]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _records(run):
    return [{k: v for k, v in r.items() if k != "sec_per_step"}
            for r in map(json.loads, (Path(run) / "metrics.jsonl").read_text().splitlines())]


# --- config ----------------------------------------------------------------------------------------


def test_config_priority_preset_file_set_options(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"train": {"lr": 1.0, "steps": 5, "loss": {"gan": 3.0}}, "seed": 4}))
    cfg = resolve_config("unit", preset="tiny", config_file=cfg_file,
                         sets=["train.lr=2e-4", "data.size=[16,32]", "train.gan_mode=hinge", "train.loss.cyc_x=1"],
                         options={"train.steps": 7, "seed": None})
    assert cfg["train"]["lr"] == 2e-4          # --set beats the file
    assert cfg["train"]["steps"] == 7          # explicit options beat the file
    assert cfg["seed"] == 4                    # an option left out does not override
    assert cfg["train"]["loss"] == {"gan": 3.0, "recon_x": 10.0, "recon_kl": 0.01, "cyc_x": 1, "cyc_kl": 0.01, "vgg": 0.0,
                                    "sem": 0.0}
    assert cfg["data"]["size"] == [16, 32] and cfg["train"]["gan_mode"] == "hinge"  # JSON, else a string
    assert cfg["model_kwargs"]["channels"] == 16 and cfg["preset"] == "tiny"
    assert resolve_config("unit")["preset"] == "paper"
    assert resolve_config("unit", config_file=cfg_file)["data"]["size"] == [256, 512]
    with pytest.raises(S2RError, match="unknown config key"):
        resolve_config("unit", sets=["trian.lr=1"])
    with pytest.raises(S2RError, match="positive integer"):
        resolve_config("unit", options={"train.steps": 0})
    with pytest.raises(S2RError, match="no preset"):
        resolve_config("unit", preset="huge")
    assert parse_size("32x64") == [32, 64]
    with pytest.raises(S2RError, match="HxW"):
        parse_size("32by64")


def test_dry_run_prints_config_and_writes_nothing(world, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
                                 "--out", str(out), "--dry-run", "--steps", "9", *FAST])
    assert result.exit_code == 0, result.output
    assert "Dry run; exiting." in result.output
    cfg = json.loads(result.stdout)
    assert cfg["train"]["steps"] == 9 and cfg["data"]["synthetic"] == world["synthetic"]
    assert not out.exists()


# --- a real run ----------------------------------------------------------------------------------------


def test_train_writes_the_run_folder_and_learns(world, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
                                 "--out", str(out), "--steps", "20", *FAST, "--set", "train.log_every=5",
                                 "--set", "train.sample_every=10", "--set", "train.checkpoint_every=10",
                                 "--set", "train.keep_every=15"])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["steps"] == 20 and cfg["data"]["size"] == [32, 64]
    records = _records(out)
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert records[-1]["G/recon_x"] < 0.75 * records[0]["G/recon_x"]  # the VAEs learn to reconstruct
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000000.png", "step_000010.png", "step_000020.png"]
    assert (out / "losses.png").stat().st_size > 1000
    ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 20 and set(ckpt["state_dicts"]) == {"G", "D", "G_ema"} and ckpt["config"] == cfg
    # keep_every=15 keeps the step-15 snapshot beside latest.pt (a step that is no checkpoint_every multiple)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest.pt", "step_000015.pt"]
    kept = load_checkpoint(out / "checkpoints" / "step_000015.pt")
    name = next(iter(ckpt["state_dicts"]["G"]))
    assert kept["step"] == 15 and not torch.equal(kept["state_dicts"]["G"][name], ckpt["state_dicts"]["G"][name])
    model, _ = model_from_checkpoint(ckpt)
    assert model.translate(torch.zeros(1, 3, 32, 64)).shape == (1, 3, 32, 64)

    # an existing run is refused without --resume/--overwrite; --overwrite starts over
    again = runner.invoke(app, ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
                                "--out", str(out), *FAST])
    assert again.exit_code == 1 and len(_lines(again)) == 1 and "already holds a run" in _lines(again)[0]
    over = runner.invoke(app, ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
                               "--out", str(out), "--steps", "2", "--overwrite", "--amp", "bf16", *FAST])
    assert over.exit_code == 0, over.output
    assert "applies to CUDA only" in over.output  # AMP is a no-op with a note on CPU
    assert json.loads((out / "config.json").read_text())["train"]["amp"] == "bf16"
    assert [r["step"] for r in _records(out)] == [1, 2] and not (out / "samples" / "step_000010.png").exists()


def test_resume_continues_the_same_losses(world, tmp_path):
    opts = {"data.synthetic": world["synthetic"], "data.real": world["real"], "data.size": [32, 48]}
    sets = ["train.log_every=1", "train.sample_every=1000", "train.batch_size=2"]
    train_run("unit", tmp_path / "full", preset="tiny", sets=sets, options={**opts, "train.steps": 6})
    train_run("unit", tmp_path / "split", preset="tiny", sets=sets, options={**opts, "train.steps": 3})
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")["sampler"]["position"] == 6
    with pytest.raises(S2RError, match="--resume cannot change train.lr"):
        train_run("unit", tmp_path / "split", resume=True, sets=["train.lr=1"], options={"train.steps": 6})
    state = train_run("unit", tmp_path / "split", resume=True, options={"train.steps": 6})
    assert state.step == 6
    full, split = _records(tmp_path / "full"), _records(tmp_path / "split")
    assert [r["step"] for r in split] == list(range(1, 7))
    assert full == split  # every logged term, every step, bit for bit
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")["state_dicts"]["G_ema"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")["state_dicts"]["G_ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_the_thread_count_it_recorded(world, tmp_path, monkeypatch):
    # CPU results depend on the thread count, so a resume takes the run's own count, not the load-based default
    import s2rcli.utils.threads as threads

    opts = ["--preset", "tiny", "--synthetic", world["synthetic"], "--real", world["real"], "--size", "32x48",
            "--set", "train.sample_every=1000", "--set", "train.batch_size=2"]
    first = runner.invoke(app, ["--quiet", "train", "unit", *opts, "--steps", "1", "--threads", "1",
                                "--out", str(tmp_path / "run")])
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == 1

    seen = []

    class Threads(Observer):
        def on_step_end(self, state, terms):
            seen.append(torch.get_num_threads())

    monkeypatch.setattr(threads, "default_threads", lambda *a, **k: 2)  # a quieter machine now
    state = train_run("unit", tmp_path / "run", resume=True, options={"train.steps": 2}, extra_observers=[Threads()])
    assert state.step == 2 and seen == [1]
    assert load_checkpoint(tmp_path / "run")["config"]["threads"] == 1
    before = torch.get_num_threads()
    again = runner.invoke(app, ["train", "unit", "--out", str(tmp_path / "run"), "--resume", "--steps", "3"])
    assert again.exit_code == 0, again.output
    assert "bit for bit" not in again.output and load_checkpoint(tmp_path / "run")["config"]["threads"] == 1
    forced = runner.invoke(app, ["train", "unit", "--out", str(tmp_path / "run"), "--resume", "--steps", "4",
                                 "--threads", "2"])
    assert forced.exit_code == 0, forced.output
    assert "trained with 1 CPU threads and resumes with 2" in " ".join(forced.output.split())
    assert load_checkpoint(tmp_path / "run")["config"]["threads"] == 2
    assert torch.get_num_threads() == before  # the caller's setting is restored
    fresh = runner.invoke(app, ["--quiet", "train", "unit", *opts, "--steps", "1", "--out", str(tmp_path / "new")])
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((tmp_path / "new" / "config.json").read_text())["threads"] == 2  # the default for a new run


def test_data_source_is_deterministic_with_workers_and_resumes_at_consumed_position():
    syn, real = MemoryDataset(5, (30, 50)), MemoryDataset(4, (36, 44), seed=1)

    def source(workers):
        return PairDataSource(syn, real, RandomPairSampler(5, 4, seed=3), batch_size=2, size=(16, 24), seed=3,
                              workers=workers)

    plain, threaded = source(0), source(2)
    a = [b for _, b in zip(range(3), plain)]
    it = iter(threaded)
    b = [next(it) for _ in range(3)]
    for x, y in zip(a, b):
        assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"]) and torch.equal(x["index"], y["index"])
    assert threaded.state_dict()["position"] == 6  # what was consumed, not what workers pre-fetched
    resumed = source(0)
    resumed.load_state_dict(plain.state_dict())
    nxt = next(iter(resumed))
    expected = next(it)
    assert torch.equal(nxt["draw"], expected["draw"]) and torch.equal(nxt["a"], expected["a"])
    assert a[0]["a"].shape == (2, 3, 16, 24) and a[0]["a"].min() >= -1 and a[0]["a"].max() <= 1


# --- processes: Ctrl-C and torchrun ---------------------------------------------------------------------


def test_ctrl_c_leaves_a_loadable_checkpoint(world, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "s2rcli", "train", "unit", "--synthetic", world["synthetic"],
           "--real", world["real"], "--out", str(out), "--steps", "100000", *FAST,
           "--set", "train.checkpoint_every=100000"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "resume with --resume" in output
    ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["step"] >= 2 and ckpt["sampler"]["position"] == ckpt["step"]
    model, _ = model_from_checkpoint(ckpt)
    assert torch.isfinite(model.translate(torch.zeros(1, 3, 32, 64))).all()


def test_torchrun_two_processes_gloo(world, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "s2rcli",
           "--quiet", "train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
           "--out", str(out), "--steps", "3", *FAST]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 3 and ckpt["sampler"]["position"] == 3  # each rank drew 3 of the 6 pairs
    assert [r["step"] for r in _records(out)] == [1, 2, 3]  # rank 0 alone writes
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 3


# --- error paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["train", "unet", "--out", "{out}"], "unknown model 'unet'"),
    (["train", "fastseg", "--out", "{out}"], "--train is required"),
    (["train", "unit", "--real", "{real}", "--out", "{out}", "--preset", "tiny"], "--synthetic is required"),
    (["train", "unit", "--synthetic", "folder:{tmp}/missing", "--real", "{real}", "--out", "{out}", "--preset", "tiny"],
     "not found"),
    (["train", "unit", "--synthetic", "{syn}", "--real", "{real}", "--out", "{out}", "--resume"], "nothing to resume"),
    (["train", "unit", "--synthetic", "{syn}", "--real", "{real}", "--out", "{out}", "--smart-batch"],
     "--smart-batch needs a pairs file"),
    (["train", "unit", "--synthetic", "{syn}", "--real", "{real}", "--out", "{out}", "--set", "train.lr"],
     "is not key=value"),
    (["train", "unit", "--synthetic", "{syn}", "--real", "{real}", "--out", "{out}", "--size", "big"], "bad size"),
    (["train", "unit", "--synthetic", "{syn}", "--real", "{real}", "--out", "{out}", "--set", "train.keep_every=-1"],
     "train.keep_every must be 0 (off) or a positive integer"),
])
def test_errors_are_one_line_exit_1(world, tmp_path, args, message):
    fill = {"out": str(tmp_path / "run"), "real": world["real"], "syn": world["synthetic"], "tmp": str(tmp_path)}
    result = runner.invoke(app, [a.format(**fill) for a in args])
    assert result.exit_code == 1, result.output
    lines = _lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert not (tmp_path / "run").exists()  # nothing written before the inputs were checked
