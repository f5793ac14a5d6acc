"""Real dataset files, part 2: fid with a too-small reference, one aspect-keeping resize policy,
announced and seamless tiling, --threads, unwrapped messages, all-zero SP-Feat, unreadable
translate inputs under on_error=skip, and the --label-space table in the data layer."""

from __future__ import annotations

import ast
import io as stdio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import s2rcli.console as console_module
import s2rcli.inference as inference
from s2rcli.checkpoint import make_checkpoint, save_checkpoint
from s2rcli.cli.app import app
from s2rcli.data.datasets import open_dataset
from s2rcli.data.labels import colorize, get_label_space
from s2rcli.data.pair_source import scale_crop_flip
from s2rcli.data.spfeat import compute_spfeat_file, partial_path
from s2rcli.data.torchdata import (ImageLabelDataset, cover_crop_image, cover_crop_label, cover_crop_window,
                                   image_to_tensor, tensor_to_image)
from s2rcli.errors import S2RError
from s2rcli.evaluation import evaluate_pairs, write_predictions
from s2rcli.inference import run_padded, run_tiled, tile_count, tile_grid
from s2rcli.metrics import fid as F
from s2rcli.metrics.segmentation import default_subsets
from s2rcli.models import registry
from s2rcli.utils import threads as T

from toy_task import write_folder_world, one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()
SPACE = get_label_space("cityscapes19")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    return lines[0]


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


# --- A: fid with several references, one too small ------------------------------------------------


def _images(folder: Path, n: int, seed: int, flat: bool = False, size=(20, 40)) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        if flat:
            array = np.empty((*size, 3), np.uint8)
            array[: size[0] // 2], array[size[0] // 2:] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        else:
            array = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img{i:02d}.png")
    return str(folder)


@pytest.fixture(scope="module")
def fid_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid2")
    return {"noise": _images(root / "noise", 6, 0), "noise2": _images(root / "noise2", 6, 1),
            "flat": _images(root / "flat", 6, 2, flat=True), "one": _images(root / "one", 1, 3)}


def _fid(*args, **env):
    return runner.invoke(app, ["fid", *args, "--size", "16x32", "--inception-weights", "random", "--no-cache"],
                         env={"COLUMNS": "300", **env})


def test_fid_skips_a_too_small_reference_names_it_and_keeps_the_others(fid_sets):
    result = _fid(fid_sets["noise"], "--real", fid_sets["flat"], "--synthetic", fid_sets["noise2"],
                  "--also", fid_sets["one"], "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["reference"] for r in payload["results"]] == ["real", "synthetic"]
    assert all(np.isfinite(r["fid"]) for r in payload["results"])
    (skipped,) = payload["skipped"]
    assert skipped["spec"] == fid_sets["one"] and skipped["count"] == 1 and "at least 2" in skipped["reason"]
    err = _flat(result.stderr)
    assert f"skipped reference {fid_sets['one']}" in err
    # 6 images against 240 random features: the estimate is biased, and the warning says so
    assert payload["protocol"]["feature_dim"] == 240
    assert "fewer images than its 240 feature dimensions is biased" in err and "compare FIDs only at equal N" in err
    assert any("biased" in w for w in payload["warnings"])
    table = _fid(fid_sets["noise"], fid_sets["flat"], "--also", fid_sets["one"])
    assert table.exit_code == 0 and "skipped" in table.stdout


def test_fid_with_only_too_small_references_or_input_fails_naming_them(fid_sets):
    line = _one_error_line(_fid(fid_sets["noise"], "--real", fid_sets["one"]))
    assert "no reference can be compared" in line and f"real ({fid_sets['one']}) (1)" in line
    line = _one_error_line(_fid(fid_sets["one"], fid_sets["noise"]))
    assert f"the set under test {fid_sets['one']} has 1 image" in line


def test_kid_spread_is_shown_only_where_subsets_can_differ(fid_sets):
    result = _fid(fid_sets["noise"], fid_sets["flat"], "--kid", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["kid_subset_size"] == 6 and row["kid_std"] is None and np.isfinite(row["kid_mean"])
    assert "KID ± n/a" in _flat(result.stderr)
    table = _fid(fid_sets["noise"], fid_sets["flat"], "--kid")
    assert table.exit_code == 0 and "± n/a" in table.stdout and "± 0.00" not in table.stdout
    # with sets larger than the subsets, the spread is defined
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 5)).astype(np.float32), rng.normal(1, 1, size=(12, 5)).astype(np.float32)
    out = F.kid_from_features(a, b, subset_size=6)
    assert out["kid_std"] is not None and out["kid_std"] > 0
    assert F.kid_from_features(a, b)["kid_std"] is None  # subsets of 12 out of 12: always the whole set


# --- B: one resize policy: cover, then centre-crop --------------------------------------------------

CAR, ROAD = 13, 0


def _circle_frame(h: int = 96, w: int = 128, radius: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    label = np.full((h, w), ROAD, np.uint8)
    label[(yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 <= radius ** 2] = CAR
    return label


def _extent(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


class ColourSegmenter(nn.Module):
    """Reads the class back from its Cityscapes colour; remembers what it was given."""

    num_classes = 19

    def __init__(self):
        super().__init__()
        self.register_buffer("colours", torch.tensor(SPACE.colors, dtype=torch.float32) / 127.5 - 1, persistent=False)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        return -100.0 * ((x[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(2)


@pytest.fixture(scope="module")
def frame43(tmp_path_factory):
    """A 4:3 frame (96x128, Mapillary's aspect) with a round car on the road, as a folder dataset."""
    root = tmp_path_factory.mktemp("frame43")
    label = _circle_frame()
    (root / "images").mkdir()
    (root / "labels").mkdir()
    Image.fromarray(colorize(label, SPACE)).save(root / "images" / "f.png")
    Image.fromarray(label).save(root / "labels" / "f.png")
    return open_dataset(f"folder:{root}"), label


def test_cover_crop_keeps_a_circle_round_and_is_the_training_crop(frame43):
    _, label = frame43
    image = colorize(label, SPACE)
    size = (32, 64)  # 2:1, like 256x512
    assert _extent(label == CAR) == (48, 48)
    # a straight resize would squash it to 16 x 24; covering (scale 1/2) and cropping keeps it round
    squashed = np.asarray(Image.fromarray(label).resize((64, 32), Image.NEAREST))
    assert _extent(squashed == CAR) == (16, 24)
    cropped = cover_crop_label(label, size)
    assert cropped.shape == size and _extent(cropped == CAR) == (24, 24)
    # pixel for pixel: scaled to 48x64, rows 8..40 kept
    np.testing.assert_array_equal(cropped, np.asarray(Image.fromarray(label).resize((64, 48), Image.NEAREST))[8:40])
    assert cover_crop_window(label.shape, size) == (16, 80, 0, 128)
    assert cover_crop_window(label.shape, size, (48, 64)) == (8, 40, 0, 64)  # a label at half resolution
    # the very crop translator training takes without jitter (pair_source.scale_crop_flip)
    img_t, lab_t = scale_crop_flip(image, label, size, None)
    np.testing.assert_array_equal(cover_crop_image(image, size), img_t)
    np.testing.assert_array_equal(cropped, lab_t)
    # a 2:1 frame at a 2:1 size is only scaled: nothing is cut off
    assert cover_crop_window((64, 128), size) == (0, 64, 0, 128)


def test_segmenter_training_items_keep_the_aspect(frame43):
    dataset, label = frame43
    item = ImageLabelDataset(dataset, size=(32, 64))[0]
    assert item["label"].shape == (32, 64) and _extent(item["label"].numpy() == CAR) == (24, 24)
    np.testing.assert_array_equal(item["label"].numpy(), cover_crop_label(label, (32, 64)))


def test_scoring_predicts_on_the_crop_and_scores_its_window_at_full_resolution(frame43, tmp_path):
    dataset, label = frame43
    model = ColourSegmenter()
    cm = evaluate_pairs(model, [(dataset, 0, dataset, 0)], num_classes=19, size=(32, 64))
    (seen,) = model.seen
    assert seen.shape == (1, 3, 32, 64)
    car = (tensor_to_image(seen[0]) == np.array(SPACE.colors[CAR], np.uint8)).all(-1)
    height, width = _extent(car)
    assert abs(height - width) <= 1 and height >= 22  # round, not a 16 x 24 ellipse
    scores = cm.scores(SPACE.class_names, default_subsets(SPACE.name)).to_dict()
    assert scores["num_pixels"] == 64 * 128  # rows 16..80 of the 96x128 label: the window the crop kept
    assert scores["pixel_accuracy"] > 0.98 and scores["per_class_iou"]["car"] > 0.95
    (written,) = write_predictions(model, dataset, tmp_path / "pred", size=(32, 64))
    prediction = np.asarray(Image.open(written))
    assert prediction.shape == (96, 128)
    assert (prediction[:16] == 255).all() and (prediction[80:] == 255).all()
    inside = prediction[16:80]
    assert (inside == label[16:80]).mean() > 0.98


def test_segment_eval_help_states_the_policy():
    for command in ("score", "test", "train-and-test"):
        text = _flat(runner.invoke(app, ["segment-eval", command, "--help"], env={"COLUMNS": "300"}).output)
        assert "aspect ratio kept" in text and "centre-cropped" in text, command


# --- C: tiling: announced, bounded, seamless, with per-tile progress ------------------------------


class LocalConv(nn.Module):
    """Three 3x3 convolutions: a 7x7 receptive field, well inside the overlap."""

    input_kind = "image"
    stride = 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.G = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                               nn.Conv2d(8, 3, 3, padding=1), nn.Tanh())

    def translate(self, x, direction="a2b"):
        return self.G(x)

    def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
        self.G.load_state_dict(state_dicts["G"])


class NormConv(nn.Module):
    """Instance normalisation, as in UNIT: each tile is normalised by its own statistics."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.norm, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.b(torch.relu(self.norm(self.a(x)))))


def _smooth_image(h: int = 96, w: int = 160) -> torch.Tensor:
    torch.manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    x = torch.stack([torch.sin(3 * xx + yy), torch.cos(2 * yy - xx), xx * yy])[None] * 0.8
    return x + 0.2 * torch.rand(1, 3, h, w)


def _seam_steps(fn, x, tile):
    """Per seam column and row: how much the tiled-minus-untiled difference jumps across it, in grey
    levels, and the median jump between neighbouring columns and rows elsewhere."""
    with torch.no_grad():
        whole, tiled = run_padded(fn, x, 4), run_tiled(fn, x, 4, tile=tile)
    diff = (tiled - whole)[0].mean(0) * 127.5
    col = (diff[:, 1:] - diff[:, :-1]).abs().mean(0)  # col[c - 1]: between columns c - 1 and c
    row = (diff[1:, :] - diff[:-1, :]).abs().mean(1)
    size, _, ys, xs = tile_grid(x.shape[-2], x.shape[-1], 4, tile)
    seam_cols = sorted(set(xs[1:]) | {x0 + size for x0 in xs[:-1]})
    seam_rows = sorted(set(ys[1:]) | {y0 + size for y0 in ys[:-1]})
    return ((tiled - whole).abs().mean().item() * 127.5, [col[c - 1].item() for c in seam_cols],
            [row[r - 1].item() for r in seam_rows], col.median().item(), row.median().item())


def test_tiled_output_is_close_and_has_no_step_at_the_seams():
    x = _smooth_image()
    assert tile_count(96, 160, 4, 64) == 6 and tile_count(96, 160, 4, 0) == 1 and tile_count(60, 60, 4, 64) == 1
    # a model whose receptive field fits in the overlap: tiled ~= untiled, no seam
    mean, cols, rows, _, _ = _seam_steps(LocalConv().eval().G, x, 64)
    assert mean < 0.1            # grey levels (measured ~0.02)
    assert max(cols + rows) < 0.25  # a hard seam would jump by 0.3-2 grey levels here
    # instance normalisation: tiles differ by several grey levels, but the blend leaves no step
    mean, cols, rows, col_median, row_median = _seam_steps(NormConv().eval(), x, 64)
    assert 1 < mean < 30
    assert max(cols) < 2 * col_median and max(rows) < 2 * row_median  # hard seams: 3-6x the median


@pytest.fixture(scope="module")
def local_conv():
    presets = {"tiny": {"model": {}}, "paper": {"model": {}}}
    registry.register_model("test-tiles-conv", kind="translation", input_kind="image", presets=presets)(LocalConv)
    yield
    registry.unregister_model("test-tiles-conv")


def test_translate_announces_tiling_and_moves_the_bar_per_tile(local_conv, tmp_path, monkeypatch):
    folder = tmp_path / "big" / "images"
    folder.mkdir(parents=True)
    Image.fromarray(tensor_to_image(_smooth_image(80, 120)[0])).save(folder / "big.png")
    ckpt = tmp_path / "conv.pt"
    save_checkpoint(make_checkpoint(model="test-tiles-conv", model_kwargs={},
                                    state_dicts={"G": LocalConv().G.state_dict()}), ckpt)
    bars = []

    class Recorder:
        def __init__(self, total, description="working"):
            self.total, self.steps = total, []
            bars.append(self)

        def __enter__(self):
            return lambda amount=1: self.steps.append(amount)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(inference, "progress_bar", Recorder)
    result = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", str(tmp_path / "big"),
                                 "--output", str(tmp_path / "out"), "--tile", "32"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    tiles = tile_count(80, 120, 4, 32)
    assert tiles == 15  # rows 0, 24, 48; columns 0, 24, 48, 72, 88
    err = _flat(result.stderr)
    assert f"translated in 32x32 tiles overlapping by 8 px and blended ({tiles} tiles for 80x120)" in err
    assert "1 tiled" in err
    (bar,) = bars
    assert bar.total == 1 and len(bar.steps) >= tiles and sum(bar.steps) == pytest.approx(1)
    assert all(step == pytest.approx(1 / tiles) for step in bar.steps[:tiles])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tiled"] == 1
    # untiled: no tiling line
    plain = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", str(tmp_path / "big"),
                                "--output", str(tmp_path / "out0"), "--tile", "0"])
    assert plain.exit_code == 0 and "tiling:" not in plain.stderr
    a = np.asarray(Image.open(tmp_path / "out" / "images" / "big.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "out0" / "images" / "big.png")).astype(int)
    assert np.abs(a - b).mean() < 0.5


def test_run_tiled_reports_each_tile():
    calls = []
    x = torch.zeros(1, 3, 40, 72)
    run_tiled(lambda t: t, x, 4, tile=32, on_tile=lambda k, n: calls.append((k, n)))
    n = tile_count(40, 72, 4, 32)
    assert calls == [(k, n) for k in range(1, n + 1)] and n > 1


# --- D: --threads ------------------------------------------------------------------------------


def _topology(root: Path, siblings: dict[int, str]) -> Path:
    for cpu, text in siblings.items():
        (root / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (root / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(text + "\n")
    return root


def test_default_threads_are_the_free_physical_cores(tmp_path):
    ht = _topology(tmp_path / "ht", {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})  # 2 cores, 2 threads each
    assert T.physical_cores({0, 1, 2, 3}, ht) == 2
    assert T.default_threads({0, 1, 2, 3}, 0.0, ht) == 2
    assert T.default_threads({0, 1, 2, 3}, 0.6, ht) == 1
    assert T.default_threads({0, 1, 2, 3}, 7.0, ht) == 1       # never below 1
    assert T.physical_cores({0, 1}, ht) == 2                    # one thread of each core is allowed
    assert T.default_threads({0, 1, 2, 3}, 1.4, tmp_path / "none") == 3  # no topology: CPUs count as cores
    assert T._cpu_list("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}


def test_train_and_translate_take_threads(monkeypatch, tmp_path):
    import s2rcli.cli.train as train_cli
    import s2rcli.cli.translate as translate_cli

    seen = {}
    before = torch.get_num_threads()
    monkeypatch.setattr(translate_cli, "translate_dataset", lambda *a, **k: seen.update(translate=torch.get_num_threads()))
    # train_run sets the count itself (and records it in the run): the CLI hands it over
    monkeypatch.setattr(train_cli, "train_run", lambda *a, **k: seen.update(train=k["threads"]))
    result = runner.invoke(app, ["translate", "--checkpoint", "x.pt", "--input", "in", "--output", "out",
                                 "--threads", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "unit", "--out", str(tmp_path / "run"), "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert seen == {"translate": 3, "train": 2} and torch.get_num_threads() == before  # restored afterwards
    monkeypatch.setattr(T, "default_threads", lambda: 5)
    runner.invoke(app, ["translate", "--checkpoint", "x.pt", "--input", "in", "--output", "out"])
    assert seen["translate"] == 5
    assert "at least 1 thread" in _one_error_line(runner.invoke(app, ["translate", "--checkpoint", "x.pt", "--input",
                                                                      "in", "--output", "o", "--threads", "0"]))
    for command in (["train"], ["translate"]):
        text = _flat(runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"}).output)
        assert "--threads" in text and "sched_getaffinity" in text and "load average" in text, command


# --- E: whole messages ---------------------------------------------------------------------------


def test_warnings_and_notes_are_not_wrapped_at_80_columns(monkeypatch):
    buffer = stdio.StringIO()
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(console_module.settings, "quiet", False)  # an earlier --quiet invocation may have set it
    monkeypatch.setattr(console_module, "console", Console(file=buffer, highlight=False))
    message = "left out " + " ".join(f"city/frame_{i:04d}.png" for i in range(12)) + " (on_error=skip)"
    console_module.warn(message)
    console_module.info(message)
    lines = buffer.getvalue().splitlines()
    assert lines == [f"warning: {message}", message]


def test_a_download_error_keeps_its_whole_first_sentence(tmp_path, monkeypatch):
    import s2rcli.pretrained as pretrained

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    first = ("<urlopen error [Errno -3] Temporary failure in name resolution while connecting to "
             "download.pytorch.org through the proxy configured in HTTPS_PROXY for this session>.")
    assert len(first) > 120

    def offline(url, target):
        raise OSError(f"{first} Second sentence with details.")

    monkeypatch.setattr(pretrained, "_download", offline)
    with pytest.raises(S2RError) as caught:
        pretrained.resolve_weights("vgg16")
    assert first in caught.value.message and "Second sentence" not in caught.value.message


# --- F: SP-Feat of labels without a single class pixel ----------------------------------------------


def test_spfeat_of_all_ignore_labels_is_an_error(tmp_path):
    world = write_folder_world(tmp_path / "w", n=3, size=(24, 40))
    root = Path(world["real"].split(":", 1)[1])
    for path in (root / "labels").iterdir():
        Image.fromarray(np.full((24, 40), 255, np.uint8)).save(path)
    out = tmp_path / "f.npz"
    with pytest.raises(S2RError, match="no pixel of any of the 19 classes") as caught:
        compute_spfeat_file(world["real"], out, progress=False)
    assert "every SP-Feat vector would be zero" in caught.value.message
    assert not out.exists() and not partial_path(out).exists()
    line = _one_error_line(runner.invoke(app, ["-q", "prepare", "spfeat", world["real"], "--out", str(out)]))
    assert "no pixel of any of the 19 classes" in line and not out.exists()
    # one label with class pixels is enough
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(root / "labels" / "rea_001.png")
    assert compute_spfeat_file(world["real"], out, progress=False)["images"] == 3


# --- G: translate and unreadable inputs ------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_ckpt(local_conv, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "conv.pt"
    save_checkpoint(make_checkpoint(model="test-tiles-conv", model_kwargs={},
                                    state_dicts={"G": LocalConv().G.state_dict()}), path)
    return path


def _broken_images_folder(root: Path) -> Path:
    """Four images, no labels: a_empty.png (zero bytes), b_ok, c_cut.png (truncated), d_ok."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for name in ("b_ok", "c_cut", "d_ok"):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
    (root / "images" / "a_empty.png").write_bytes(b"")
    _truncate(root / "images" / "c_cut.png")
    return root


def test_translate_fails_on_an_unreadable_input_naming_it(conv_ckpt, tmp_path):
    root = _broken_images_folder(tmp_path / "in")
    line = _one_error_line(runner.invoke(app, ["-q", "translate", "--checkpoint", str(conv_ckpt), "--input", str(root),
                                               "--output", str(tmp_path / "out")]))
    assert "cannot read image" in line and "a_empty.png" in line and "bug" not in line


def test_translate_leaves_out_unreadable_inputs_under_on_error_skip(conv_ckpt, tmp_path):
    root = _broken_images_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = runner.invoke(app, ["translate", "--checkpoint", str(conv_ckpt), "--input", f"folder:{root}?on_error=skip",
                                 "--output", str(out)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["b_ok.png", "d_ok.png"]
    err = _flat(result.stderr)
    assert "left out a_empty" in err and "left out c_cut" in err
    assert "wrote 2 image(s)" in err and "left out 2 unreadable input(s): a_empty, c_cut" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 2 and manifest["unreadable"] == 2
    assert manifest["unreadable_inputs"] == ["a_empty", "c_cut"] and manifest["status"] == "complete"


def test_translate_counts_inputs_left_out_when_a_labelled_folder_is_opened(conv_ckpt, tmp_path):
    specs = write_folder_world(tmp_path / "w", n=3, size=(20, 28))
    root = Path(specs["synthetic"].split(":", 1)[1])
    (root / "images" / "syn_001.png").write_bytes(b"")
    out = tmp_path / "out"
    manifest = inference.translate_dataset(conv_ckpt, specs["synthetic"] + "?on_error=skip", out)
    assert manifest["images"] == 2 and manifest["unreadable"] == 1 and manifest["unreadable_inputs"] == ["syn_001"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["syn_000.png", "syn_002.png"]


def test_translate_with_every_input_unreadable_exits_1(conv_ckpt, tmp_path):
    root = tmp_path / "in" / "images"
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(b"")
    (root / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = runner.invoke(app, ["translate", "--checkpoint", str(conv_ckpt), "--input",
                                 f"folder:{root.parent}?on_error=skip", "--output", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "every input" in _flat(result.output) and "nothing was written" in _flat(result.output)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["images"] == 0 and manifest["unreadable"] == 2


# --- H: the --label-space table lives in the data layer ---------------------------------------------


def test_label_formats_live_in_the_data_layer():
    from s2rcli.data import label_formats

    assert inference.LABEL_FORMATS is label_formats.LABEL_FORMATS
    assert inference.open_with_label_format is label_formats.open_with_label_format
    import s2rcli.evaluation as evaluation

    tree = ast.parse(Path(evaluation.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "inference" not in modules and "data.label_formats" in modules
