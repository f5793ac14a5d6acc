"""`s2r translate` keeps output folders truthful: a lock against a second run, --skip-existing
checked against the manifest, no writing over datasets or sources, clear write errors, and
--label-space for folders of raw label ids."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import s2rcli.inference as inference
from s2rcli.checkpoint import make_checkpoint, save_checkpoint
from s2rcli.cli.app import app
from s2rcli.data.labels import IGNORE
from s2rcli.data.tables import CITYSCAPES_LABEL_IDS
from s2rcli.errors import S2RError
from s2rcli.inference import LABEL_FORMATS, translate_dataset
from s2rcli.models import registry
from s2rcli.utils.atomic import LOCK_NAME, folder_lock, write_error

from toy_task import write_folder_world, one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()


class PixelConv(nn.Module):
    """A tiny image model (stride 4)."""

    input_kind = "image"
    stride = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.G = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.Tanh())

    def translate(self, x, direction="a2b"):
        return self.G(x) if direction == "a2b" else -self.G(x)

    def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
        self.G.load_state_dict(state_dicts["G"])


class LabelPainter(nn.Module):
    """A label-to-image model that refuses ids outside its 19 classes, like the real ones."""

    input_kind = "label"
    stride = 4
    num_classes = 19

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(self.num_classes + 1, 3)

    def generate(self, labels, generator=None):
        bad = labels[(labels >= self.num_classes) & (labels != 255)]
        assert bad.numel() == 0, f"label values {bad.unique().tolist()} are outside 0..18"
        labels = torch.where(labels == 255, self.num_classes, labels)
        noise = torch.randn(labels.shape[0], 3, 1, 1, generator=generator, device=labels.device)
        return torch.tanh(self.embed(labels).permute(0, 3, 1, 2) + 0.3 * noise)

    def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
        self.load_state_dict(state_dicts["G"])


@pytest.fixture(scope="module", autouse=True)
def fakes():
    presets = {"tiny": {"model": {}}, "paper": {"model": {}}}
    registry.register_model("test-safety-conv", kind="translation", input_kind="image", presets=presets)(PixelConv)
    registry.register_model("test-safety-label", kind="translation", input_kind="label", presets=presets)(LabelPainter)
    yield
    registry.unregister_model("test-safety-conv")
    registry.unregister_model("test-safety-label")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    specs = write_folder_world(root, n=4, size=(20, 28))
    conv = PixelConv()
    ckpt = root / "conv.pt"
    save_checkpoint(make_checkpoint(model="test-safety-conv", model_kwargs={}, state_dicts={"G": conv.G.state_dict()},
                                    label_space="cityscapes19", step=3), ckpt)
    other = PixelConv()
    with torch.no_grad():
        other.G[0].weight.mul_(-1)
    ckpt2 = root / "conv_other.pt"
    save_checkpoint(make_checkpoint(model="test-safety-conv", model_kwargs={}, state_dicts={"G": other.G.state_dict()},
                                    label_space="cityscapes19", step=3), ckpt2)
    painter = root / "painter.pt"
    save_checkpoint(make_checkpoint(model="test-safety-label", model_kwargs={},
                                    state_dicts={"G": LabelPainter().state_dict()}, label_space="cityscapes19"), painter)
    return root, specs, {"conv": ckpt, "other": ckpt2, "painter": painter}


def _one_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    return lines[0]


def _translate(*args):
    return runner.invoke(app, ["-q", "translate", *map(str, args)])


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 2: one run at a time per output folder ------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused_and_names_the_holder(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    with folder_lock(out, command="s2r translate") as lock:
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
        line = _one_line(result)
        assert result.exit_code == 1
        assert str(out) in line and f"pid {os.getpid()}" in line and "in use" in line and "--output" in line
        assert not (out / "images").exists() and not (out / "manifest.json").exists()
        assert lock.exists()                                        # the holder keeps its lock
    assert not lock.exists() and not out.exists()                   # released; the empty folder it made is gone


def test_a_lock_held_on_another_host_is_respected(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "command": "s2r translate",
                                             "started": "2024-01-01 00:00:00"}))
    line = _one_line(_translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out))
    assert "elsewhere.example" in line and str(out / LOCK_NAME) in line    # says which file to delete if stale
    assert not (out / "images").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(world, tmp_path):
    root, specs, ckpts = world
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "s2r translate",
                                             "started": "2024-01-01 00:00:00", "token": "x"}))
    result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
    assert result.exit_code == 0, result.output
    assert "taking over the lock" in result.output and str(dead.pid) in result.output
    assert len(list((out / "images").glob("*.png"))) == 4 and not (out / LOCK_NAME).exists()


def test_the_lock_is_released_on_ctrl_c_and_the_manifest_says_what_was_done(world, tmp_path, monkeypatch):
    root, specs, ckpts = world
    out = tmp_path / "out"
    real_write = inference.write_png
    calls = []

    def interrupted(array, path, **kw):
        calls.append(path)
        if len(calls) == 5:                     # image 3's image file: images 1 and 2 are complete (with labels)
            raise KeyboardInterrupt
        return real_write(array, path, **kw)

    monkeypatch.setattr(inference, "write_png", interrupted)
    result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
    assert result.exit_code == 130
    assert not (out / LOCK_NAME).exists()
    manifest = _manifest(out)
    assert manifest["status"] == "incomplete" and manifest["outputs"] == ["syn_000.png", "syn_001.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["syn_000.png", "syn_001.png"]
    monkeypatch.setattr(inference, "write_png", real_write)
    resumed = translate_dataset(ckpts["conv"], specs["synthetic"], out, skip_existing=True)
    assert resumed["images"] == 2 and resumed["skipped"] == 2 and resumed["status"] == "complete"
    assert _manifest(out)["outputs"] == [f"syn_{i:03d}.png" for i in range(4)]


# --- 4: --skip-existing keeps only what the manifest vouches for ----------------------------------


def test_skip_existing_refuses_another_checkpoint_input_or_setting(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    first = translate_dataset(ckpts["conv"], specs["synthetic"], out)
    assert first["checkpoint_sha256"] and first["settings"]["direction"] == "a2b" and first["status"] == "complete"
    before = _snapshot(out)
    cases = [
        (["--checkpoint", ckpts["other"], "--input", specs["synthetic"]], "checkpoint"),
        (["--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--direction", "b2a"], "direction: a2b before, b2a now"),
        (["--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--size", "16x24"], "size"),
        (["--checkpoint", ckpts["conv"], "--input", specs["synthetic"] + "?limit=2"], "input"),
    ]
    for args, what in cases:
        result = _translate(*args, "--output", out, "--skip-existing")
        line = _one_line(result)
        assert result.exit_code == 1 and "--skip-existing" in line and what in line and "--overwrite" in line, line
    assert _snapshot(out) == before                                 # nothing touched, manifest still true


def test_skip_existing_does_the_rest_and_lists_old_and_new(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    translate_dataset(ckpts["conv"], specs["synthetic"], out)
    kept = (out / "images" / "syn_000.png").stat().st_mtime_ns
    redo = (out / "images" / "syn_002.png").read_bytes()
    (out / "images" / "syn_002.png").unlink()
    (out / "labels" / "syn_002.png").unlink()
    copy = tmp_path / "elsewhere" / "same.pt"                        # identity is the content hash, not the path
    copy.parent.mkdir()
    shutil.copy(ckpts["conv"], copy)
    again = translate_dataset(copy, specs["synthetic"], out, skip_existing=True, tile=0)
    assert again["images"] == 1 and again["skipped"] == 3
    assert (out / "images" / "syn_002.png").read_bytes() == redo
    assert (out / "images" / "syn_000.png").stat().st_mtime_ns == kept
    manifest = _manifest(out)
    assert manifest["outputs"] == [f"syn_{i:03d}.png" for i in range(4)] and manifest["status"] == "complete"


def test_skip_existing_refuses_files_the_manifest_does_not_list(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    translate_dataset(ckpts["conv"], specs["synthetic"], out)
    manifest = _manifest(out)
    manifest["outputs"].remove("syn_001.png")
    (out / "manifest.json").write_text(json.dumps(manifest))
    line = _one_line(_translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out,
                                "--skip-existing"))
    assert "not listed" in line and "syn_001.png" in line

    bare = tmp_path / "bare"                                        # outputs with no manifest at all
    shutil.copytree(out / "images", bare / "images")
    line = _one_line(_translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", bare,
                                "--skip-existing"))
    assert "no manifest.json" in line and str(bare) in line


def test_skip_existing_refuses_a_manifest_of_an_older_version(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    translate_dataset(ckpts["conv"], specs["synthetic"], out)
    manifest = _manifest(out)
    for key in ("kind", "checkpoint_sha256", "input_spec", "settings", "outputs", "status", "max_side"):
        manifest.pop(key)
    (out / "manifest.json").write_text(json.dumps(manifest))
    line = _one_line(_translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out,
                                "--skip-existing"))
    assert "no content hash recorded" in line and "not recorded" in line


def test_a_second_plain_run_with_other_inputs_does_not_mix_into_the_folder(world, tmp_path):
    root, specs, ckpts = world
    out = tmp_path / "out"
    translate_dataset(ckpts["conv"], specs["synthetic"], out)
    line = _one_line(_translate("--checkpoint", ckpts["conv"], "--input", specs["real"], "--output", out))
    assert "another translate run" in line and "--skip-existing" in line
    assert _manifest(out)["input"] == specs["synthetic"]


# --- 5: never replace a dataset's manifest or the sources -------------------------------------------


def test_output_into_a_dataset_root_is_refused(world, tmp_path):
    from s2rcli.data.demo import write_demo_world

    root, specs, ckpts = world
    demo = tmp_path / "demo"
    write_demo_world(demo, n_synthetic=2, n_real=2, n_real_val=2, size=(16, 24), seed=0)
    before = (demo / "manifest.json").read_bytes()
    for extra in ([], ["--overwrite"], ["--skip-existing"]):
        result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", demo, *extra)
        line = _one_line(result)
        assert result.exit_code == 1 and "manifest.json" in line and "did not write" in line
    assert (demo / "manifest.json").read_bytes() == before
    assert not (demo / "images").exists() and not (demo / LOCK_NAME).exists()


def test_overwrite_into_around_or_inside_the_input_is_refused(world, tmp_path):
    root, specs, ckpts = world
    src = tmp_path / "src"
    shutil.copytree(root / "synthetic", src)
    before = _snapshot(src)
    for target, where in ((src, "is the input folder"), (tmp_path, "contains the input folder"),
                          (src / "translated", "is inside the input folder")):
        result = _translate("--checkpoint", ckpts["conv"], "--input", f"folder:{src}", "--output", target, "--overwrite")
        line = _one_line(result)
        assert result.exit_code == 1 and where in line and str(src) in line
    assert _snapshot(src) == before
    # without --overwrite, the existing sources are never replaced either
    result = _translate("--checkpoint", ckpts["conv"], "--input", str(src), "--output", src)
    assert result.exit_code == 1 and "already exist" in _one_line(result)
    assert _snapshot(src) == before


# --- 10: write errors name the file and leave a truthful manifest -----------------------------------


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"),
                                         (errno.EROFS, "read-only")])
def test_a_write_error_names_the_file_and_the_manifest_lists_what_was_done(world, tmp_path, monkeypatch, code, cause):
    root, specs, ckpts = world
    out = tmp_path / "out"
    real_write = inference.write_png
    calls = []

    def failing(array, path, **kw):
        calls.append(path)
        if len(calls) == 4:                     # image 2's label: image 1 is complete, image 2 is not
            raise OSError(code, os.strerror(code))
        return real_write(array, path, **kw)

    monkeypatch.setattr(inference, "write_png", failing)
    result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
    line = _one_line(result)
    assert result.exit_code == 1 and "unexpected" not in line
    assert str(out / "labels" / "syn_001.png") in line and cause in line and "--skip-existing" in line
    manifest = _manifest(out)
    assert manifest["status"] == "incomplete" and manifest["outputs"] == ["syn_000.png"]
    assert [p.name for p in (out / "images").iterdir()] == ["syn_000.png"]     # no image without its label
    assert not (out / LOCK_NAME).exists()
    monkeypatch.setattr(inference, "write_png", real_write)
    assert translate_dataset(ckpts["conv"], specs["synthetic"], out, skip_existing=True)["images"] == 3


def test_when_the_manifest_cannot_be_updated_either_unlisted_outputs_are_removed(world, tmp_path, monkeypatch):
    root, specs, ckpts = world
    out = tmp_path / "out"
    real_write, real_json = inference.write_png, inference.atomic_write_json
    writes, saves = [], []

    def failing_png(array, path, **kw):
        writes.append(path)
        if len(writes) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(array, path, **kw)

    def failing_json(path, obj, **kw):
        saves.append(obj["status"])
        if len(saves) > 1:                      # the first (before any output) succeeds, later ones do not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_json(path, obj, **kw)

    monkeypatch.setattr(inference, "write_png", failing_png)
    monkeypatch.setattr(inference, "atomic_write_json", failing_json)
    result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    line = errors[0]
    assert result.exit_code == 1 and str(out / "images" / "syn_002.png") in line and "no space left" in line
    assert "removed the 2 output(s)" in " ".join(result.output.split())
    manifest = _manifest(out)
    assert manifest["outputs"] == [] and manifest["status"] == "incomplete"
    assert list((out / "images").glob("*.png")) == [] and list((out / "labels").glob("*.png")) == []


def test_a_full_disk_at_the_final_manifest_names_it_and_leaves_no_unlisted_outputs(world, tmp_path, monkeypatch):
    root, specs, ckpts = world
    out = tmp_path / "out"
    real_json = inference.atomic_write_json

    def failing_json(path, obj, **kw):
        if obj["status"] == "complete":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_json(path, obj, **kw)

    monkeypatch.setattr(inference, "atomic_write_json", failing_json)
    result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1
    assert f"cannot write the manifest {out / 'manifest.json'}: no space left" in errors[0]
    assert _manifest(out)["outputs"] == [] and list((out / "images").glob("*.png")) == []


def test_an_unwritable_output_folder_is_one_clear_line(world, tmp_path, monkeypatch):
    root, specs, ckpts = world
    out = tmp_path / "ro"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kw):
        if str(path).startswith(str(out)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    result = _translate("--checkpoint", ckpts["conv"], "--input", specs["synthetic"], "--output", out)
    line = _one_line(result)
    assert result.exit_code == 1 and str(out / LOCK_NAME) in line and "read-only" in line and "Hint:" in line
    monkeypatch.setattr(os, "open", real_open)
    assert list(out.iterdir()) == []


def test_write_error_messages():
    err = write_error("/x/y.png", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(err, S2RError) and err.message == "cannot write /x/y.png: no space left on the device"
    assert "free some space" in err.hint
    other = write_error("/x/y.png", OSError(errno.EIO, "Input/output error"), what="the manifest", hint="keep calm")
    assert other.message == "cannot write the manifest /x/y.png: Input/output error" and other.hint.endswith("keep calm")


# --- 13: --label-space for folders of raw label ids -------------------------------------------------


def _raw_gta5_folder(root, tmp_path):
    """The world's trainId labels written back as GTA5 / Cityscapes labelIds, and a trainId copy."""
    from cityscapesscripts.helpers.labels import trainId2label

    to_id = np.full(256, 0, np.uint8)
    for train_id in range(19):
        to_id[train_id] = trainId2label[train_id].id
    to_id[IGNORE] = 0                                                # unlabeled
    raw, trainid = tmp_path / "gta5_labels", tmp_path / "trainid_labels"
    raw.mkdir()
    trainid.mkdir()
    for path in sorted((root / "synthetic" / "labels").glob("*.png")):
        label = np.asarray(Image.open(path))
        Image.fromarray(to_id[label]).save(raw / path.name)
        Image.fromarray(label).save(trainid / path.name)
    return raw, trainid


def test_label_space_reads_a_folder_of_raw_gta5_label_ids(world, tmp_path):
    root, specs, ckpts = world
    raw, trainid = _raw_gta5_folder(root, tmp_path)
    assert np.asarray(Image.open(raw / "syn_000.png")).max() > 18   # real labelIds: road is 7, car 26, ...

    refused = _translate("--checkpoint", ckpts["painter"], "--input", raw, "--output", tmp_path / "no")
    line = _one_line(refused)
    assert refused.exit_code == 1 and "outside 0..18" in line and "--label-space" in line and "gta5" in line

    result = _translate("--checkpoint", ckpts["painter"], "--input", raw, "--output", tmp_path / "gta5",
                        "--label-space", "gta5")
    assert result.exit_code == 0, result.output
    reference = _translate("--checkpoint", ckpts["painter"], "--input", trainid, "--output", tmp_path / "ref",
                           "--label-space", "trainid")
    assert reference.exit_code == 0, reference.output
    for name in ("syn_000.png", "syn_003.png"):                     # same labels after conversion, same pixels
        assert np.array_equal(np.asarray(Image.open(tmp_path / "gta5" / "images" / name)),
                              np.asarray(Image.open(tmp_path / "ref" / "images" / name)))
        converted = CITYSCAPES_LABEL_IDS.lut("cityscapes19")[np.asarray(Image.open(raw / name))]
        assert np.array_equal(np.asarray(Image.open(tmp_path / "gta5" / "labels" / name)), converted)
    manifest = _manifest(tmp_path / "gta5")
    assert manifest["label_space"] == "gta5" and manifest["space"] == "cityscapes19"


def test_label_space_converts_the_labels_carried_along_with_images(world, tmp_path):
    root, specs, ckpts = world
    raw, _ = _raw_gta5_folder(root, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(root / "synthetic" / "images", data / "images")
    shutil.copytree(raw, data / "labels")
    out = tmp_path / "out"
    result = _translate("--checkpoint", ckpts["conv"], "--input", data, "--output", out, "--label-space", "cityscapes")
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(out / "labels" / "syn_001.png")),
                          np.asarray(Image.open(root / "synthetic" / "labels" / "syn_001.png")))


def test_label_space_refusals_and_help(world, tmp_path):
    root, specs, ckpts = world
    unknown = _translate("--checkpoint", ckpts["painter"], "--input", specs["synthetic"], "--output", tmp_path / "a",
                         "--label-space", "gta6")
    line = _one_line(unknown)
    assert "unknown --label-space 'gta6'" in line and all(name in line for name in LABEL_FORMATS)
    from s2rcli.data.demo import write_demo_world

    demo = tmp_path / "demo"
    write_demo_world(demo, n_synthetic=2, n_real=2, n_real_val=2, size=(16, 24), seed=0)
    kind = _translate("--checkpoint", ckpts["painter"], "--input", f"demo:{demo}", "--output", tmp_path / "b",
                      "--label-space", "gta5")
    assert kind.exit_code == 1 and "plain folders" in _one_line(kind)
    labels_only = _translate("--checkpoint", ckpts["conv"], "--input", root / "synthetic" / "labels", "--output",
                             tmp_path / "c", "--label-space", "trainid")
    assert labels_only.exit_code == 1 and "holds label maps" in _one_line(labels_only)
    text = " ".join(runner.invoke(app, ["translate", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--label-space" in text and all(name in text for name in LABEL_FORMATS)
    assert "Example: s2r translate" in text
