"""`s2r prepare remap`: labels in the common space, mirrored names, resumable, robust, reported."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

import fixtures_data as fx
from s2rcli.cli.app import app
from s2rcli.data.datasets import open_dataset
from s2rcli.data.remap import remap_dataset
from s2rcli.errors import S2RError

runner = CliRunner()
RAW = fx.blocks([[7, 21, 23, 26], [1, 17, 20, 32]])
EXPECTED = np.array([[0, 8, 10, 13], [255, 5, 7, 17]], np.uint8).repeat(3, 0).repeat(2, 1)


def _gta(tmp_path):
    root = tmp_path / "gta"
    fx.gta5(root, RAW)
    return root


def test_remap_writes_a_folder_dataset(tmp_path):
    root = _gta(tmp_path)
    out = tmp_path / "out"
    manifest = remap_dataset(f"gta5:{root}", out, workers=2)
    assert manifest["status"] == "complete" and manifest["space"] == "cityscapes19"
    assert manifest["counts"] == {"samples": 3, "written": 3, "kept": 0, "skipped": 0, "resized": 1}
    assert manifest["resized"] == ["00004"] and manifest["unknown_pixels"] == {}
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["00001.png", "00003.png", "00004.png"]
    assert os.path.islink(out / "images" / "00001.png")
    ds = open_dataset(str(out))
    assert ds.names == ["00001", "00003", "00004"]
    np.testing.assert_array_equal(ds.read_label(0), EXPECTED)
    np.testing.assert_array_equal(ds.read_image(0), fx.rgb(0))
    np.testing.assert_array_equal(ds.read_label(1), np.flipud(EXPECTED))
    # Stored in cityscapes34, read back in cityscapes19: the manifest says which space the files hold.
    out34 = tmp_path / "out34"
    remap_dataset(f"gta5:{root}", out34, space="cityscapes34", workers=1, images="copy")
    assert not os.path.islink(out34 / "images" / "00001.png")
    np.testing.assert_array_equal(open_dataset(str(out34), "cityscapes34").read_label(0), RAW)
    np.testing.assert_array_equal(open_dataset(str(out34)).read_label(0), EXPECTED)


def test_resume_keeps_valid_files_and_redoes_broken_ones(tmp_path):
    root = _gta(tmp_path)
    out = tmp_path / "out"
    remap_dataset(f"gta5:{root}", out, workers=1)
    (out / "labels" / "00001.png").unlink()                              # interrupted before this one
    data = (out / "labels" / "00003.png").read_bytes()
    (out / "labels" / "00003.png").write_bytes(data[:20])                # damaged
    manifest = remap_dataset(f"gta5:{root}", out, workers=2)
    assert manifest["counts"]["written"] == 2 and manifest["counts"]["kept"] == 1
    np.testing.assert_array_equal(open_dataset(str(out)).read_label(1), np.flipud(EXPECTED))
    assert remap_dataset(f"gta5:{root}", out, overwrite=True, workers=1)["counts"]["written"] == 3
    with pytest.raises(S2RError, match="holds a different output"):
        remap_dataset(f"gta5:{root}", out, space="cityscapes34")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(S2RError, match="not empty"):
        remap_dataset(f"gta5:{root}", tmp_path / "busy")


def test_bad_inputs_fail_by_default_and_are_reported_with_skip(tmp_path):
    root = _gta(tmp_path)
    bad = RAW.copy()
    bad[0, 0], bad[5, 7] = 200, 201
    fx.save(bad, root / "labels" / "00003.png", mode="P")
    fx.save(fx.rgb(5), root / "images" / "00007.png")
    data = fx.save(fx.rgb(6), root / "images" / "00008.png").read_bytes()
    (root / "images" / "00008.png").write_bytes(data[: len(data) // 3])     # truncated image
    fx.save(RAW, root / "labels" / "00008.png", mode="P")
    fx.save(RAW, root / "labels" / "00009.png", mode="P")                  # a label with no image

    out = tmp_path / "out"
    result = runner.invoke(app, ["--quiet", "prepare", "remap", f"gta5:{root}", "--out", str(out)])
    assert result.exit_code == 1 and "00007" in result.output and "no label file" in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")

    fx.save(RAW, root / "labels" / "00007.png", mode="P")
    result = runner.invoke(app, ["--quiet", "prepare", "remap", f"gta5:{root}", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 1 and ("00003.png" in result.output or "00008.png" in result.output)
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"

    result = runner.invoke(app, ["--quiet", "prepare", "remap", f"gta5:{root}", "--out", str(out),
                                 "--on-error", "skip", "--workers", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["unknown_pixels"] == {"200": 1, "201": 1}
    assert manifest["unknown_files"] == ["00003"]
    assert [s["name"] for s in manifest["skipped"]] == ["00008"] and "cannot read" in manifest["skipped"][0]["error"]
    assert manifest["counts"]["samples"] == 5 and manifest["counts"]["skipped"] == 1
    assert "200" in result.output and "201" in result.output          # the per-value report
    label = open_dataset(str(out), on_error="skip").read_label(1)
    expected = EXPECTED.copy()
    expected[0, 0] = expected[5, 7] = 255
    np.testing.assert_array_equal(label, expected)
    assert not (out / "labels" / "00008.png").exists()
