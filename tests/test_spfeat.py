"""SP-Feat: hand-computed vectors, a naive reference, the streaming/resumable file writer, the segmenter path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from s2rcli.data.spfeat import (compute_spfeat_file, feature_dim, load_spfeat, parse_levels, partial_path,
                                slice_bounds, spfeat, spfeat_with_counts)
from s2rcli.errors import S2RError
from s2rcli.evaluation import SegmenterLabels

# --- hand-made label maps ------------------------------------------------------------------


def test_slice_bounds_are_floor_of_i_n_over_l():
    assert slice_bounds(5, 2).tolist() == [0, 2, 5]
    assert slice_bounds(10, 4).tolist() == [0, 2, 5, 7, 10]
    assert slice_bounds(3, 4).tolist() == [0, 0, 1, 2, 3]  # more slices than pixels: some are empty
    assert slice_bounds(8, 1).tolist() == [0, 8]


def test_feature_dim_and_levels():
    assert feature_dim(19) == 19 * 21
    assert feature_dim(3, (1, 3)) == 30
    assert parse_levels("1, 2,4") == (1, 2, 4)
    for bad in ("", "1,x", "0,2", "2,2"):
        with pytest.raises(S2RError):
            parse_levels(bad)


def test_hand_computed_4x4_two_levels():
    label = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [2, 2, 2, 0],
                      [2, 2, 255, 255]], np.uint8)
    expected = np.array(
        # level 1: 14 labelled pixels: class 0 = 5, class 1 = 4, class 2 = 5
        [5 / 14, 4 / 14, 5 / 14]
        # level 2, row-major: top-left all 0; top-right all 1; bottom-left all 2; bottom-right {2, 0, ignore, ignore}
        + [1, 0, 0] + [0, 1, 0] + [0, 0, 1] + [0.5, 0, 0.5],
        np.float32)
    vector, counts = spfeat_with_counts(label, 3, levels=(1, 2))
    assert vector.dtype == np.float32 and vector.shape == (15,)
    np.testing.assert_allclose(vector, expected, rtol=1e-6)
    assert counts.tolist() == [5, 4, 5]


def test_uneven_slices_and_fully_ignored_slice():
    # 5 rows x 3 cols at level 2: rows split [0,2) [2,5), cols split [0,1) [1,3).
    label = np.array([[1, 0, 0],
                      [1, 0, 0],
                      [255, 1, 1],
                      [255, 1, 0],
                      [255, 0, 0]], np.uint8)
    vector = spfeat(label, 2, levels=(2,))
    expected = np.array([0, 1,          # top-left: two 1s
                         1, 0,          # top-right: four 0s
                         0, 0,          # bottom-left: only ignore -> zeros
                         3 / 6, 3 / 6],  # bottom-right: 1,1,1,0,0,0
                        np.float32)
    np.testing.assert_allclose(vector, expected, rtol=1e-6)


def test_order_of_levels_is_kept():
    label = np.array([[0, 1], [1, 1]], np.uint8)
    a = spfeat(label, 2, levels=(1, 2))
    b = spfeat(label, 2, levels=(2, 1))
    np.testing.assert_array_equal(a[:2], b[8:])
    np.testing.assert_array_equal(a[2:], b[:8])
    np.testing.assert_allclose(a[:2], [0.25, 0.75])


def test_values_outside_the_space_are_refused():
    label = np.zeros((4, 4), np.uint8)
    label[0, 0] = 19
    with pytest.raises(S2RError, match="outside the 19-class space"):
        spfeat(label, 19)
    label[0, 0] = 255
    assert spfeat(label, 19).shape == (19 * 21,)
    # a custom ignore index
    label[0, 0] = 7
    vec = spfeat(label, 5, levels=(1,), ignore_index=7)
    np.testing.assert_allclose(vec, [1, 0, 0, 0, 0])
    # an ignore index inside the class range: that class is never counted
    small = np.array([[0, 1], [2, 2]], np.uint8)
    np.testing.assert_allclose(spfeat(small, 3, levels=(1,), ignore_index=0), [0, 1 / 3, 2 / 3])


def _naive_spfeat(label, num_classes, levels, ignore=255):
    parts = []
    h, w = label.shape
    for l in levels:
        ys = [i * h // l for i in range(l + 1)]
        xs = [i * w // l for i in range(l + 1)]
        for r in range(l):
            for c in range(l):
                hist = np.zeros(num_classes)
                for v in label[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].ravel():
                    if v != ignore:
                        hist[v] += 1
                parts.append(hist / hist.sum() if hist.sum() else hist)
    return np.concatenate(parts)


@pytest.mark.parametrize("method", ["opencv", "bincount", "auto"])
@pytest.mark.parametrize("shape,levels", [((13, 29), (1, 2, 4)), ((7, 11), (1, 3, 4)), ((3, 2), (4,)),
                                          ((17, 9), (3, 5, 2)), ((190, 260), (1, 2, 4))])
def test_matches_a_naive_reference(shape, levels, method):
    rng = np.random.default_rng(sum(shape))
    label = rng.integers(0, 6, size=shape).astype(np.uint8)
    label[rng.random(shape) < 0.2] = 255
    vector, counts = spfeat_with_counts(label, 6, levels, method=method)
    np.testing.assert_allclose(vector, _naive_spfeat(label, 6, levels), rtol=1e-6, atol=1e-7)
    assert counts.tolist() == np.bincount(label[label != 255], minlength=6).tolist()


def test_both_counting_methods_give_the_same_integers():
    from s2rcli.data.spfeat import cell_counts

    label = np.random.default_rng(0).integers(0, 256, size=(301, 517)).astype(np.uint8)
    a = cell_counts(label, (1, 3, 4), method="opencv")
    b = cell_counts(label, (1, 3, 4), method="bincount")
    assert a.dtype == b.dtype == np.int64 and a.shape == (6, 6, 256)  # union of 3- and 4-grids: 6 x 6 cells
    np.testing.assert_array_equal(a, b)
    assert a.sum() == label.size


# --- whole datasets -------------------------------------------------------------------------


@dataclass
class FakeSpace:
    name: str = "toy3"
    num_classes: int = 3
    ignore_index: int = 255


class FakeLabels:
    """A dataset-like object: names, space, has_labels, read_label/read_image; counts its reads."""

    kind, root, split = "fake", "/nowhere", None

    def __init__(self, n: int, *, shape=(12, 20), fail_at: int | None = None, labels: bool = True):
        self.space = FakeSpace()
        self.n, self.shape, self.fail_at, self.has_labels = n, shape, fail_at, labels
        self.reads: list[int] = []

    @property
    def names(self):
        return [f"city/img_{i:03d}" for i in range(self.n)]

    def __len__(self):
        return self.n

    def label(self, i: int) -> np.ndarray:
        rng = np.random.default_rng(i)
        label = rng.integers(0, 3, size=self.shape).astype(np.uint8)
        label[: i % 5] = 255
        return label

    def read_label(self, i: int) -> np.ndarray:
        if i == self.fail_at:
            raise KeyboardInterrupt
        self.reads.append(i)
        return self.label(i)


def test_file_has_the_documented_contents(tmp_path):
    data = FakeLabels(9)
    summary = compute_spfeat_file(data, tmp_path / "f.npz", (1, 2), workers=1, chunk_size=4, progress=False)
    assert summary["images"] == 9 and summary["dim"] == 15
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        assert {"features", "names", "levels", "space", "num_classes", "spec", "class_pixels"} <= set(z.files)
        assert z["features"].dtype == np.float32 and z["features"].shape == (9, 15)
        assert z["names"].tolist() == data.names and z["levels"].tolist() == [1, 2]
        assert str(z["space"]) == "toy3" and int(z["num_classes"]) == 3 and str(z["spec"]) == "fake:/nowhere"
        for i in (0, 4, 8):
            vec, counts = spfeat_with_counts(data.label(i), 3, (1, 2))
            np.testing.assert_array_equal(z["features"][i], vec)
            np.testing.assert_array_equal(z["class_pixels"][i], counts)
    loaded = load_spfeat(tmp_path / "f.npz")
    assert loaded.levels == (1, 2) and loaded.features.shape == (9, 15)
    with pytest.raises(S2RError, match="already exists"):
        compute_spfeat_file(data, tmp_path / "f.npz", (1, 2), progress=False)


def test_two_workers_give_the_same_matrix(tmp_path):
    data = FakeLabels(12)
    compute_spfeat_file(data, tmp_path / "a.npz", workers=1, chunk_size=3, progress=False)
    compute_spfeat_file(data, tmp_path / "b.npz", workers=2, chunk_size=3, progress=False)
    a, b = load_spfeat(tmp_path / "a.npz"), load_spfeat(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.class_pixels, b.class_pixels)
    assert a.names.tolist() == b.names.tolist()


def test_an_interrupted_run_resumes_from_its_partial_file(tmp_path):
    out = tmp_path / "feats.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(FakeLabels(10, fail_at=7), out, (1, 2), chunk_size=2, progress=False)
    part = partial_path(out)
    assert part.name == "feats.partial.npz" and part.exists() and not out.exists()
    with np.load(part) as z:
        assert z["done"].tolist() == [True] * 6 + [False] * 4  # chunks [0,1] [2,3] [4,5] done; [6,7] failed

    again = FakeLabels(10)
    summary = compute_spfeat_file(again, out, (1, 2), chunk_size=2, progress=False)
    assert summary["resumed"] == 6
    assert sorted(again.reads) == [6, 7, 8, 9]  # only what was missing is read again
    assert not part.exists()
    compute_spfeat_file(FakeLabels(10), tmp_path / "fresh.npz", (1, 2), progress=False)
    np.testing.assert_array_equal(load_spfeat(out).features, load_spfeat(tmp_path / "fresh.npz").features)


def test_a_partial_file_for_other_levels_is_ignored(tmp_path):
    out = tmp_path / "feats.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(FakeLabels(6, fail_at=4), out, (1, 2), chunk_size=2, progress=False)
    data = FakeLabels(6)
    summary = compute_spfeat_file(data, out, (1, 4), chunk_size=2, progress=False)
    assert summary["resumed"] == 0 and sorted(data.reads) == list(range(6))
    assert load_spfeat(out).levels == (1, 4)


def test_unlabelled_data_needs_a_segmenter(tmp_path):
    with pytest.raises(S2RError, match="--segmenter"):
        compute_spfeat_file(FakeLabels(3, labels=False), tmp_path / "x.npz", progress=False)


def test_bad_labels_name_the_image(tmp_path):
    class Bad(FakeLabels):
        def label(self, i):
            return np.full(self.shape, 9 if i == 2 else 0, np.uint8)

    with pytest.raises(S2RError, match="city/img_002"):
        compute_spfeat_file(Bad(4), tmp_path / "x.npz", progress=False)


def test_load_spfeat_errors(tmp_path):
    with pytest.raises(S2RError, match="not found"):
        load_spfeat(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(S2RError, match="not an SP-Feat file"):
        load_spfeat(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(S2RError, match="cannot read"):
        load_spfeat(tmp_path / "junk.npz")


# --- labels from a segmenter ------------------------------------------------------------------

FAKE_SEGMENTER = "spfeat-test-threshold-seg"


class ThresholdSegmenter(nn.Module):
    """Class 1 where the red channel is bright, class 0 elsewhere; class 2 never."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        red = x[:, :1] * self.scale
        rest = torch.full_like(red, -5.0).expand(-1, self.num_classes - 2, -1, -1)
        return torch.cat([-red, red, rest], dim=1)


@pytest.fixture
def fake_segmenter(tmp_path):
    from s2rcli.models.registry import register_model, unregister_model
    from s2rcli.checkpoint import make_checkpoint, save_checkpoint

    register_model(FAKE_SEGMENTER, kind="segmenter", input_kind="image")(ThresholdSegmenter)
    try:
        model = ThresholdSegmenter()
        path = save_checkpoint(make_checkpoint(model=FAKE_SEGMENTER, model_kwargs={"num_classes": 3},
                                               state_dicts={"model": model.state_dict()}, label_space="toy3"),
                               tmp_path / "seg.pt")
        yield path
    finally:
        unregister_model(FAKE_SEGMENTER)


class FakeImages(FakeLabels):
    def image(self, i):
        image = np.zeros((8, 12, 3), np.uint8)
        image[:, : 2 + i, 0] = 255  # the first 2+i columns are bright red
        return image

    def read_image(self, i):
        return self.image(i)

    def read_label(self, i):
        raise AssertionError("the segmenter path must not read labels")


def test_segmenter_predictions_replace_labels(tmp_path, fake_segmenter):
    data = FakeImages(4, labels=False)
    labeller = SegmenterLabels(data, fake_segmenter, device="cpu")
    summary = compute_spfeat_file(data, tmp_path / "pred.npz", (1, 2), labeller=labeller, progress=False)
    assert summary["source"].startswith("segmenter:")
    feats = load_spfeat(tmp_path / "pred.npz")
    for i in range(4):
        expected = np.zeros((8, 12), np.uint8)
        expected[:, : 2 + i] = 1
        np.testing.assert_array_equal(feats.features[i], spfeat(expected, 3, (1, 2)))
    assert feats.class_pixels[0].tolist() == [80, 16, 0]


def test_segmenter_with_other_classes_is_refused(tmp_path, fake_segmenter):
    from s2rcli.checkpoint import make_checkpoint, save_checkpoint

    model = ThresholdSegmenter(num_classes=5)
    path = save_checkpoint(make_checkpoint(model=FAKE_SEGMENTER, model_kwargs={"num_classes": 5},
                                           state_dicts={"model": model.state_dict()}), tmp_path / "seg5.pt")
    with pytest.raises(S2RError, match="predicts 5 classes"):
        compute_spfeat_file(FakeImages(2, labels=False), tmp_path / "p.npz",
                            labeller=SegmenterLabels(FakeImages(2, labels=False), path), progress=False)
    assert not Path(tmp_path / "p.npz").exists()


# --- the CLI, on a tiny demo world --------------------------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from s2rcli.cli.app import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from s2rcli.data.demo import write_demo_world

    root = tmp_path_factory.mktemp("world") / "demo"
    write_demo_world(root, n_synthetic=10, n_real=5, n_real_val=0, size=(32, 64), workers=1)
    return root


def _error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    return lines[0]


def test_cli_spfeat_on_the_demo_world(tiny_world, tmp_path):
    from s2rcli.data.datasets import open_dataset

    spec = f"demo:{tiny_world}?split=synthetic"
    out = tmp_path / "syn.npz"
    result = runner.invoke(app, ["prepare", "spfeat", spec, "--out", str(out), "--levels", "1,2", "--workers", "2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert '"images": 10' in result.stdout and '"dim": 95' in result.stdout
    feats = load_spfeat(out)
    data = open_dataset(spec)
    assert feats.names.tolist() == data.names and feats.spec == spec and feats.space == "cityscapes19"
    np.testing.assert_array_equal(feats.features[3], spfeat(data.read_label(3), 19, (1, 2)))
    assert "already exists" in _error_line(runner.invoke(app, ["prepare", "spfeat", spec, "--out", str(out)]))
    again = runner.invoke(app, ["prepare", "spfeat", spec, "--out", str(out), "--overwrite"])
    assert again.exit_code == 0 and load_spfeat(out).levels == (1, 2, 4)


def test_cli_spfeat_errors(tiny_world, tmp_path):
    out = str(tmp_path / "x.npz")
    assert "levels" in _error_line(runner.invoke(app, ["prepare", "spfeat", f"demo:{tiny_world}", "--out", out,
                                                       "--levels", "1,a"]))
    missing = runner.invoke(app, ["prepare", "spfeat", f"folder:{tmp_path / 'nowhere'}", "--out", out])
    _error_line(missing)
    # a folder of images without labels: SP-Feat needs a segmenter
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (16, 8)).save(tmp_path / "photos" / "a.png")
    assert "--segmenter" in _error_line(runner.invoke(app, ["prepare", "spfeat", str(tmp_path / "photos"), "--out", out]))
    assert not (tmp_path / "x.npz").exists()


def test_cli_spfeat_with_a_segmenter(tmp_path):
    from PIL import Image

    from s2rcli.models.registry import register_model, unregister_model
    from s2rcli.checkpoint import make_checkpoint, save_checkpoint

    (tmp_path / "photos").mkdir()
    for i in range(3):
        image = np.zeros((8, 16, 3), np.uint8)
        image[:, : 4 * i, 0] = 255
        Image.fromarray(image).save(tmp_path / "photos" / f"p{i}.png")
    register_model(FAKE_SEGMENTER, kind="segmenter", input_kind="image")(ThresholdSegmenter)
    try:
        ckpt = save_checkpoint(make_checkpoint(model=FAKE_SEGMENTER, model_kwargs={"num_classes": 19},
                                               state_dicts={"model": ThresholdSegmenter(19).state_dict()},
                                               label_space="cityscapes19"), tmp_path / "seg.pt")
        out = tmp_path / "pred.npz"
        result = runner.invoke(app, ["prepare", "spfeat", str(tmp_path / "photos"), "--out", str(out),
                                     "--segmenter", str(ckpt), "--levels", "1"])
        assert result.exit_code == 0, result.output
        feats = load_spfeat(out)
        assert feats.names.tolist() == ["p0", "p1", "p2"]
        np.testing.assert_allclose(feats.features[:, :2], [[1, 0], [0.75, 0.25], [0.5, 0.5]])
        wrong = runner.invoke(app, ["prepare", "spfeat", str(tmp_path / "photos"), "--out", str(tmp_path / "w.npz"),
                                    "--segmenter", str(ckpt), "--space", "synthia16"])
        assert "16" in _error_line(wrong)
        missing = runner.invoke(app, ["prepare", "spfeat", str(tmp_path / "photos"), "--out", str(tmp_path / "w.npz"),
                                      "--segmenter", str(tmp_path / "none.pt")])
        assert "checkpoint not found" in _error_line(missing)
    finally:
        unregister_model(FAKE_SEGMENTER)
