"""The demo world: deterministic, labelled, with the documented class shift and appearance gap."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data.datasets import open_dataset
from s2rcli.data.demo import render_sample, samples_figure, write_demo_world
from s2rcli.errors import S2RError

runner = CliRunner()


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_same_seed_gives_identical_files(tmp_path):
    kwargs = dict(n_synthetic=3, n_real=2, n_real_val=2, size=(32, 64), seed=7)
    write_demo_world(tmp_path / "a", workers=1, **kwargs)
    write_demo_world(tmp_path / "b", workers=2, **kwargs)  # parallel writing changes nothing
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * (3 + 2 + 2) and a == b
    assert (tmp_path / "a" / "manifest.json").read_text() == (tmp_path / "b" / "manifest.json").read_text()
    write_demo_world(tmp_path / "c", workers=1, **{**kwargs, "seed": 8})
    assert _files(tmp_path / "c") != a


def test_class_shift_direction_and_manifest(tmp_path):
    write_demo_world(tmp_path, n_synthetic=40, n_real=40, n_real_val=1, size=(48, 96), seed=0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["size"] == [48, 96] and manifest["space"] == "cityscapes19"
    assert manifest["counts"] == {"synthetic": 40, "real": 40, "real_val": 1}
    share = {}
    for domain in ("synthetic", "real"):
        ds = open_dataset(f"demo:{tmp_path}?split={domain}")
        counts = sum(np.bincount(ds.read_label(i).ravel(), minlength=256) for i in range(len(ds)))
        assert counts[19:].sum() == 0  # every pixel has a class
        share[domain] = counts[:19] / counts.sum()
        recorded = manifest["class_frequencies"][domain]
        np.testing.assert_allclose([recorded[n] for n in ds.space.class_names], share[domain], atol=1e-5)
    building, vegetation, terrain, car = 2, 8, 9, 13
    syn, real = share["synthetic"], share["real"]
    assert syn[building] > 1.5 * real[building]
    assert real[vegetation] > 1.5 * syn[vegetation] and real[terrain] > 1.5 * syn[terrain]
    assert syn[car] > real[car]
    assert (syn > 0).sum() >= 12 and (real > 0).sum() >= 12  # many classes present on both sides


def test_appearance_gap():
    """Synthetic surfaces are flat (neighbouring pixels of a class are equal), real ones are textured."""
    texture = {}
    for domain in ("synthetic", "real"):
        diffs = []
        for i in range(4):
            image, label = render_sample(0, domain, i, (64, 128))
            same = label[:, 1:] == label[:, :-1]
            step = np.abs(image[:, 1:].astype(int) - image[:, :-1].astype(int)).sum(axis=2)
            diffs.append(step[same])
        texture[domain] = np.median(np.concatenate(diffs))
    assert texture["synthetic"] == 0 and texture["real"] >= 3


def test_cli_writes_refuses_and_overwrites(tmp_path):
    out = tmp_path / "world"
    args = ["prepare", "demo", "--out", str(out), "--n-synthetic", "2", "--n-real", "2", "--n-real-val", "1",
            "--size", "32x64", "--seed", "3"]
    result = runner.invoke(app, ["--quiet", *args])
    assert result.exit_code == 0, result.output
    assert "vegetation" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "real", "real_val", "synthetic"]
    assert len(list((out / "real_val" / "labels").glob("*.png"))) == 1
    before = _files(out)
    result = runner.invoke(app, ["--quiet", *args])
    assert result.exit_code == 1 and "already exists" in result.output and "--overwrite" in result.output
    result = runner.invoke(app, ["--quiet", *args, "--seed", "4", "--overwrite"])
    assert result.exit_code == 0 and _files(out) != before and not list(out.glob(".demo-staging-*"))
    result = runner.invoke(app, ["--quiet", "prepare", "demo", "--out", str(tmp_path / "x"), "--size", "12"])
    assert result.exit_code == 1 and "invalid size" in result.output


def test_samples_figure(tmp_path):
    write_demo_world(tmp_path, n_synthetic=3, n_real=3, n_real_val=0, size=(32, 64), workers=1)
    path = samples_figure(tmp_path, tmp_path / "fig.png", n=3)
    from PIL import Image

    image = np.asarray(Image.open(path))
    assert image.shape[0] > 4 * 32 and image.shape[1] > 3 * 64
    with pytest.raises(S2RError):
        samples_figure(tmp_path / "nothing", tmp_path / "fig2.png")


def test_dusk_is_a_second_differently_rendered_world(tmp_path):
    from s2rcli.data.demo import STYLES

    assert STYLES == ("street", "dusk")
    for domain in ("synthetic", "real"):
        a, la = render_sample(0, domain, 1, (64, 128), "dusk")
        b, lb = render_sample(0, domain, 1, (64, 128), "dusk")
        assert np.array_equal(a, b) and np.array_equal(la, lb)          # deterministic
        street, _ = render_sample(0, domain, 1, (64, 128), "street")
        assert np.abs(a.astype(int) - street.astype(int)).mean() > 10     # rendered differently
        assert set(np.unique(la)) <= set(range(19))                       # same label space
    manifest = write_demo_world(tmp_path / "dusk", n_synthetic=2, n_real=2, n_real_val=1, size=(64, 128),
                                style="dusk", workers=1)
    assert manifest["style"] == "dusk" and manifest["urban_share"]["synthetic"] == 0.6
    with pytest.raises(S2RError, match="unknown demo world style"):
        write_demo_world(tmp_path / "x", n_synthetic=1, n_real=1, n_real_val=0, style="noir")
