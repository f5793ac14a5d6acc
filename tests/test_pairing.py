"""KNN pairing by SP-Feat: layout matching, the quota/replacement rule, weights, coverage, files, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data.pairing import (default_max_uses, load_pairs, pair_features, save_pairs, summarize)
from s2rcli.data.spfeat import SpfeatFile, compute_spfeat_file, spfeat
from s2rcli.errors import S2RError

ROAD, BUILDING, VEGETATION, SKY, CAR = 0, 2, 8, 10, 13


def _layout(top, bottom, *, split=0.5, shape=(32, 64), left_right=False, box=None):
    label = np.empty(shape, np.uint8)
    h, w = shape
    if left_right:
        label[:, : int(w * split)], label[:, int(w * split):] = top, bottom
    else:
        label[: int(h * split)], label[int(h * split):] = top, bottom
    if box is not None:
        cls, (y0, y1, x0, x1) = box
        label[y0:y1, x0:x1] = cls
    return label


def test_the_image_with_the_query_layout_is_the_nearest():
    query = _layout(SKY, ROAD, box=(CAR, (18, 26, 40, 56)))  # sky over road, a car on the right
    synthetic = [
        _layout(ROAD, SKY, box=(CAR, (18, 26, 40, 56))),              # 0: upside down
        _layout(SKY, ROAD, split=0.45, box=(CAR, (17, 25, 42, 58))),  # 1: same layout, shifted a little
        _layout(SKY, ROAD, left_right=True, box=(CAR, (18, 26, 40, 56))),  # 2: same classes, side by side
        _layout(BUILDING, VEGETATION),                                # 3: other classes
        _layout(SKY, ROAD, box=(CAR, (18, 26, 4, 20))),                # 4: car on the left
    ]
    feats = np.stack([spfeat(s, 19) for s in synthetic])
    result = pair_features(spfeat(query, 19)[None], feats, k=3, max_uses=5)
    assert result.neighbors[0, 0] == 1
    assert 0 not in result.neighbors[0] and 3 not in result.neighbors[0]
    assert result.neighbors[0].tolist()[:2] == [1, 4]  # the car on the wrong side is second
    assert np.all(np.diff(result.distances[0]) >= 0)
    # Level 1 alone cannot tell side-by-side from top-bottom; the pyramid can.
    flat = pair_features(spfeat(query, 19, levels=(1,))[None], np.stack([spfeat(s, 19, levels=(1,)) for s in synthetic]),
                         k=5, max_uses=5)
    assert flat.distances[0, 0] == pytest.approx(flat.distances[0, 1], abs=0.05)


SYN = np.array([[0, 0], [3, 0], [0, 3], [20, 20]], np.float32)
REAL = np.array([[0.1, 0], [0.2, 0], [0.3, 0]], np.float32)


def test_an_over_used_image_is_replaced_by_the_next_nearest():
    plain = pair_features(REAL, SYN, k=1, max_uses=3)
    assert plain.neighbors[:, 0].tolist() == [0, 0, 0] and plain.replaced == 0

    capped = pair_features(REAL, SYN, k=1, max_uses=2)
    # the two closest edges (r0-s0 0.1, r1-s0 0.2) claim s0; r2 gets its next nearest, s1
    assert capped.neighbors[:, 0].tolist() == [0, 0, 1]
    np.testing.assert_allclose(capped.distances[:, 0], [0.1, 0.2, 2.7], rtol=1e-5)
    assert capped.use_counts.tolist() == [2, 1, 0, 0]
    np.testing.assert_allclose(capped.synthetic_weights, [0.5, 1.0, 0.0, 0.0])
    assert capped.replaced == 1 and capped.over_quota == 0
    assert capped.coverage == pytest.approx(0.5) and capped.plain_coverage == pytest.approx(0.25)


def test_weights_are_inverse_use_counts_and_probs_follow_them():
    real = np.array([[0.1, 0], [0.2, 0], [0, 2.9]], np.float32)
    result = pair_features(real, SYN, k=2, max_uses=10)
    assert [sorted(row) for row in result.neighbors.tolist()] == [[0, 1], [0, 1], [0, 2]]
    assert result.neighbors[2].tolist() == [2, 0]  # nearest first
    assert result.use_counts.tolist() == [3, 2, 1, 0]
    np.testing.assert_allclose(result.synthetic_weights, [1 / 3, 1 / 2, 1, 0])
    # row 0 lists s0 (weight 1/3) then s1 (1/2): probs 0.4, 0.6; row 2: s2 (1) then s0 (1/3): 0.75, 0.25
    np.testing.assert_allclose(result.probs[0], [0.4, 0.6])
    np.testing.assert_allclose(result.probs[2], [0.75, 0.25])
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0)
    assert result.coverage == pytest.approx(0.75)


def test_fallback_past_the_quota_when_candidates_run_out():
    result = pair_features(REAL, SYN, k=1, max_uses=1, search_depth=1)
    assert result.candidates == 1
    assert result.neighbors[:, 0].tolist() == [0, 0, 0]
    assert result.over_quota == 2 and result.use_counts[0] == 3


def test_the_search_goes_deeper_for_rows_still_short():
    synthetic = np.arange(100, dtype=np.float32)[:, None]
    real = np.zeros((40, 1), np.float32)  # forty identical queries: row i ends up with the i-th nearest
    result = pair_features(real, synthetic, k=1, max_uses=1)
    assert result.neighbors[:, 0].tolist() == list(range(40))
    np.testing.assert_allclose(result.distances[:, 0], np.arange(40))
    assert result.over_quota == 0 and result.candidates == 64  # 16 K candidates, then 4x deeper
    assert result.replaced == 39 and result.use_counts.max() == 1
    shallow = pair_features(real, synthetic, k=1, max_uses=1, search_depth=30)
    assert shallow.neighbors[:30, 0].tolist() == list(range(30)) and shallow.over_quota == 10
    assert shallow.candidates == 30


def test_the_quota_gives_way_only_when_it_cannot_hold():
    result = pair_features(REAL, SYN, k=2, max_uses=1)  # 6 slots, 4 images x 1 use
    assert result.over_quota == 2 and result.use_counts.sum() == 6
    assert all(len(set(row)) == 2 for row in result.neighbors.tolist())


def test_default_quota_and_errors():
    assert default_max_uses(3000, 25000, 15) == 4
    assert default_max_uses(10, 1000, 1) == 1
    with pytest.raises(S2RError, match="-k 4"):
        pair_features(REAL, SYN, k=5)
    with pytest.raises(S2RError, match="unknown metric"):
        pair_features(REAL, SYN, k=1, metric="hamming")


def test_coverage_rises_with_the_quota_on_clustered_data():
    rng = np.random.default_rng(0)
    syn = rng.dirichlet(np.full(6, 0.3), size=400).astype(np.float32)
    real = rng.dirichlet(np.full(6, 0.3), size=60).astype(np.float32)
    loose = pair_features(real, syn, k=5, max_uses=60)
    tight = pair_features(real, syn, k=5, max_uses=1)  # the search goes as deep as it must
    assert loose.coverage == pytest.approx(loose.plain_coverage) and loose.replaced == 0
    assert tight.coverage == pytest.approx(300 / 400) and tight.use_counts.max() == 1 and tight.over_quota == 0
    short = pair_features(real, syn, k=5, max_uses=1, search_depth=20)  # some rows run out of candidates
    assert short.over_quota > 0
    assert short.coverage == pytest.approx((300 - short.over_quota) / 400)
    assert short.use_counts.sum() == 300
    assert tight.distances.mean() >= loose.distances.mean()
    s = summarize(tight, [f"s{i}" for i in range(400)], top=3)
    assert s["coverage"] == pytest.approx(0.75) and len(s["most_used"]) == 3 and s["most_used"][0]["uses"] == 1


def _feature_file(names, feats, levels=(1,), space="toy2", spec="fake:/x"):
    feats = np.asarray(feats, np.float32)
    return SpfeatFile(features=feats, names=np.asarray(names), levels=levels, space=space, num_classes=2, spec=spec,
                      class_pixels=np.ones((len(names), 2), np.int64), source="labels")


def test_pairs_file_round_trip(tmp_path):
    real = _feature_file(["r0", "r1", "r2"], REAL)
    syn = _feature_file(["s0", "s1", "s2", "s3"], SYN)
    result = pair_features(REAL, SYN, k=2)
    save_pairs(tmp_path / "p.npz", result, real, syn)
    pairs = load_pairs(tmp_path / "p.npz")
    assert pairs.real_names.tolist() == ["r0", "r1", "r2"] and pairs.synthetic_names.tolist()[-1] == "s3"
    np.testing.assert_array_equal(pairs.neighbors, result.neighbors)
    np.testing.assert_allclose(pairs.probs, result.probs)
    assert pairs.k == 2 and pairs.levels == (1,) and pairs.space == "toy2"
    with pytest.raises(S2RError, match="already exists"):
        save_pairs(tmp_path / "p.npz", result, real, syn)
    with pytest.raises(S2RError, match="not found"):
        load_pairs(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", k=np.asarray(2))
    with pytest.raises(S2RError, match="not a pairs file"):
        load_pairs(tmp_path / "bad.npz")


# --- the CLI ----------------------------------------------------------------------------------

runner = CliRunner()


class Space:
    name, num_classes, ignore_index = "cityscapes19", 19, 255


class LayoutData:
    """Dataset-like: label maps with a few layouts, so neighbours are meaningful."""

    kind, split, has_labels = "fake", None, True

    def __init__(self, prefix, n, seed):
        self.root, self.space, self.prefix, self.n, self.seed = f"/nowhere/{prefix}", Space(), prefix, n, seed

    @property
    def names(self):
        return [f"{self.prefix}/{i:03d}" for i in range(self.n)]

    def read_label(self, i):
        rng = np.random.default_rng([self.seed, i])
        return _layout(*rng.choice([SKY, ROAD, BUILDING, VEGETATION], 2, replace=False), split=rng.uniform(0.3, 0.7),
                       shape=(16, 32))


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    compute_spfeat_file(LayoutData("real", 12, 1), root / "real.npz", progress=False)
    compute_spfeat_file(LayoutData("syn", 40, 2), root / "syn.npz", progress=False)
    compute_spfeat_file(LayoutData("syn", 40, 2), root / "syn_l12.npz", (1, 2), progress=False)
    compute_spfeat_file(LayoutData("syn", 40, 2), root / "syn_space.npz", progress=False, spec="x")
    # the same features, declared in another label space
    with np.load(root / "syn_space.npz") as z:
        arrays = dict(z)
    arrays["space"] = np.asarray("synthia16")
    np.savez(root / "syn_space.npz", **arrays)
    return root


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_cli_pairs_writes_the_file_the_summary_and_the_class_chart(feature_files, tmp_path):
    out = tmp_path / "pairs.npz"
    args = ["prepare", "pairs", "--real", str(feature_files / "real.npz"), "--synthetic",
            str(feature_files / "syn.npz"), "-k", "4", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    pairs = load_pairs(out)
    assert pairs.neighbors.shape == (12, 4) and pairs.levels == (1, 2, 4) and pairs.space == "cityscapes19"
    counts = np.bincount(pairs.neighbors.ravel(), minlength=40)
    assert summary["coverage"] == pytest.approx((counts > 0).mean())
    assert summary["max_uses"] == default_max_uses(12, 40, 4) and counts.max() <= summary["max_uses"]
    assert summary["most_used"][0]["uses"] == counts.max()
    assert (tmp_path / "class_frequencies.png").stat().st_size > 1000
    # the specs in the .npz point nowhere: the preview is skipped with a warning, not a crash
    assert "preview" not in summary and "skipping the preview" in " ".join(result.stderr.split())
    # outputs are never replaced unasked
    again = runner.invoke(app, args)
    assert "already exists" in _one_error_line(again)
    table = runner.invoke(app, args[:-1] + ["--overwrite"])
    assert table.exit_code == 0 and "coverage" in table.stdout and "Most-used" in table.stdout


@pytest.mark.parametrize("synthetic,message", [("missing.npz", "SP-Feat file not found"),
                                               ("syn_l12.npz", "levels differ"),
                                               ("syn_space.npz", "label spaces differ")])
def test_cli_pairs_errors(feature_files, tmp_path, synthetic, message):
    result = runner.invoke(app, ["prepare", "pairs", "--real", str(feature_files / "real.npz"), "--synthetic",
                                 str(feature_files / synthetic), "--out", str(tmp_path / "p.npz")])
    assert message in _one_error_line(result)
    assert not (tmp_path / "p.npz").exists()


def test_cli_pairs_too_few_synthetic_images(feature_files, tmp_path):
    result = runner.invoke(app, ["prepare", "pairs", "--real", str(feature_files / "real.npz"), "--synthetic",
                                 str(feature_files / "syn.npz"), "-k", "41", "--out", str(tmp_path / "p.npz")])
    assert "only 40 synthetic images" in _one_error_line(result)


def test_cli_pairs_draws_the_preview_from_the_demo_world(tmp_path):
    from PIL import Image

    from s2rcli.data.demo import write_demo_world

    world = tmp_path / "demo"
    write_demo_world(world, n_synthetic=8, n_real=4, n_real_val=0, size=(32, 64), workers=1)
    compute_spfeat_file(f"demo:{world}?split=real", tmp_path / "real.npz", progress=False)
    compute_spfeat_file(f"demo:{world}?split=synthetic", tmp_path / "syn.npz", progress=False)
    out = tmp_path / "pairs" / "pairs.npz"
    result = runner.invoke(app, ["prepare", "pairs", "--real", str(tmp_path / "real.npz"), "--synthetic",
                                 str(tmp_path / "syn.npz"), "-k", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["preview"] == str(out.parent / "pairs_preview.png")
    with Image.open(out.parent / "pairs_preview.png") as im:
        assert im.width > 400 and im.height > 400  # 4 queries x (photo + overlay) rows, 1 + 3 columns
    assert load_pairs(out).neighbors.shape == (4, 3)
    # --synthetic-data overrides the stored spec; an unreadable one skips the preview with a warning
    again = runner.invoke(app, ["prepare", "pairs", "--real", str(tmp_path / "real.npz"), "--synthetic",
                                str(tmp_path / "syn.npz"), "-k", "3", "--out", str(out), "--overwrite",
                                "--synthetic-data", f"demo:{tmp_path / 'gone'}?split=synthetic", "--json"])
    assert again.exit_code == 0, again.output
    assert "preview" not in json.loads(again.stdout) and "skipping the preview" in " ".join(again.stderr.split())
