"""`s2r segment-eval`: score (perfect, permuted, _sNN samples), train-and-test on the
demo world, and the error paths."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data.labels import colorize, get_label_space
from s2rcli.evaluation import match_generated, split_specs
from s2rcli.models.registry import register_model, unregister_model
from s2rcli.models.segmenters import Segmenter
from s2rcli import checkpoint as ck

runner = CliRunner()
SPACE = get_label_space("cityscapes19")


class ColourSegmenter(Segmenter):
    """Reads the class back from its Cityscapes colour: perfect on colorize(label) images."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("colours", torch.tensor(SPACE.colors, dtype=torch.float32) / 127.5 - 1, persistent=False)

    def forward(self, x):
        distance = ((x[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(2)
        return -100.0 * distance


class IdentityTranslator(torch.nn.Identity):
    """A translation model that changes nothing."""

    stride = 1

    def translate(self, x, direction="a2b"):
        return x

    def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
        pass


@pytest.fixture(scope="module", autouse=True)
def fake_models():
    register_model("test-colour-seg", kind="segmenter", input_kind="image")(ColourSegmenter)
    register_model("test-fake-translator", kind="translation", input_kind="image")(IdentityTranslator)
    yield
    unregister_model("test-colour-seg")
    unregister_model("test-fake-translator")


def _labels(n=3, size=(12, 20), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = np.zeros(size, np.uint8)                                  # road
        label[: size[0] // 3] = 10                                        # sky
        label[size[0] // 3: size[0] // 2, : size[1] // 2] = 2             # building
        label[size[0] // 2:, int(rng.integers(2, 8)): 12] = 13            # a car
        label[-1, :4] = 255                                               # unlabelled pixels
        out.append(label)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    labels = _labels()
    (root / "ref" / "images").mkdir(parents=True)
    (root / "ref" / "labels").mkdir()
    perm = np.arange(256, dtype=np.uint8)
    perm[[0, 10, 2]] = [10, 2, 0]                                         # road -> sky -> building -> road
    for k, label in enumerate(labels):
        Image.fromarray(colorize(label, SPACE)).save(root / "ref" / "images" / f"f{k}.png")
        Image.fromarray(label).save(root / "ref" / "labels" / f"f{k}.png")
        for s in range(2):
            (root / "samples" / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(colorize(label, SPACE)).save(root / "samples" / "images" / f"f{k}_s{s:02d}.png")
        (root / "permuted").mkdir(exist_ok=True)
        Image.fromarray(colorize(perm[label], SPACE)).save(root / "permuted" / f"f{k}.png")
    ckpt = ck.make_checkpoint(model="test-colour-seg", model_kwargs={"num_classes": 19}, label_space="cityscapes19",
                              state_dicts={"S": {}})
    ck.save_checkpoint(ckpt, root / "colour.pt")
    other = ck.make_checkpoint(model="test-fake-translator", model_kwargs={}, state_dicts={"G": {}})
    ck.save_checkpoint(other, root / "translator.pt")
    return root, labels


def _score(root, images, *extra):
    result = runner.invoke(app, ["-q", "segment-eval", "score", "--images", str(root / images), "--labels",
                                 f"folder:{root / 'ref'}", "--segmenter", str(root / "colour.pt"), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_score_perfect_with_sample_suffixes(world):
    root, labels = world
    out = _score(root, "samples")
    assert out["scored"] == 6 and out["label_maps"] == 3 and out["unmatched"] == 0
    scores = out["scores"]
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0 and scores["mean_class_accuracy"] == 1.0
    present = {"road", "sky", "building", "car"}
    assert {k for k, v in scores["per_class_iou"].items() if v is not None} == present
    assert scores["num_pixels"] == 2 * sum(int((lab != 255).sum()) for lab in labels)


def test_score_permuted_gives_the_expected_value(world):
    root, labels = world
    scores = _score(root, "permuted")["scores"]
    # road, sky and building are rotated: IoU 0 each; car is untouched: IoU 1
    assert scores["per_class_iou"]["road"] == 0.0 and scores["per_class_iou"]["sky"] == 0.0
    assert scores["per_class_iou"]["building"] == 0.0 and scores["per_class_iou"]["car"] == 1.0
    assert scores["miou"] == pytest.approx(1 / 4)
    valid = sum(int((lab != 255).sum()) for lab in labels)
    cars = sum(int((lab == 13).sum()) for lab in labels)
    assert scores["pixel_accuracy"] == pytest.approx(cars / valid)
    assert scores["subsets"]["miou16"] == pytest.approx(1 / 4)     # all four are SYNTHIA classes too


def test_score_table_output(world):
    root, _ = world
    result = runner.invoke(app, ["segment-eval", "score", "--images", str(root / "permuted"), "--labels",
                                 f"folder:{root / 'ref'}", "--segmenter", str(root / "colour.pt")])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.stdout and "25.00" in result.stdout and "car" in result.stdout


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    return lines[0]


def test_score_refuses_non_segmenter_checkpoint(world):
    root, _ = world
    result = runner.invoke(app, ["segment-eval", "score", "--images", str(root / "samples"), "--labels",
                                 f"folder:{root / 'ref'}", "--segmenter", str(root / "translator.pt")])
    assert result.exit_code == 1
    assert "not a segmenter" in _one_error_line(result)


def test_score_missing_folder_and_no_match(world, tmp_path):
    root, _ = world
    result = runner.invoke(app, ["segment-eval", "score", "--images", str(tmp_path / "none"), "--labels",
                                 f"folder:{root / 'ref'}", "--segmenter", str(root / "colour.pt")])
    assert result.exit_code == 1 and "no such folder" in _one_error_line(result)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "unrelated.png")
    result = runner.invoke(app, ["segment-eval", "score", "--images", str(tmp_path), "--labels",
                                 f"folder:{root / 'ref'}", "--segmenter", str(root / "colour.pt")])
    assert result.exit_code == 1 and "matches a label" in _one_error_line(result)


def test_name_matching_and_spec_lists():
    pairs, unmatched = match_generated(["a", "b_s00", "b_s01", "c_s1", "x_s03", "d_s00"], ["a", "b", "c", "d_s00"])
    assert pairs == [(0, 0), (1, 1), (2, 1), (3, 2), (5, 3)] and unmatched == ["x_s03"]
    assert split_specs(["demo:w?split=real,folder:t", " x "]) == ["demo:w?split=real", "folder:t", "x"]


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    from s2rcli.data.demo import write_demo_world

    root = tmp_path_factory.mktemp("demo") / "world"
    write_demo_world(root, n_synthetic=4, n_real=48, n_real_val=12, size=(64, 128), seed=0)
    return root


def test_train_and_test_on_the_demo_world(demo_world, tmp_path):
    real, val = f"demo:{demo_world}?split=real", f"demo:{demo_world}?split=real_val"
    run = tmp_path / "run"
    result = runner.invoke(app, ["-q", "segment-eval", "train-and-test", "--train", real, "--test", val, "--model",
                                 "fastseg", "--steps", "200", "--size", "32x64", "--batch-size", "8", "--out", str(run),
                                 "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["size"] == [32, 64] and config["train"]["steps"] == 200 and config["model"] == "fastseg"
    assert (run / "checkpoints" / "latest.pt").is_file() and (run / "metrics.jsonl").is_file()
    assert json.loads((run / "results.json").read_text()) == out
    assert out["steps"] == 200 and out["test_images"] == 12 and out["train_images"] == 48

    # chance: always predicting the most frequent class
    from s2rcli.data.datasets import open_dataset

    test = open_dataset(val)
    counts = np.bincount(np.concatenate([test.read_label(i).ravel() for i in range(len(test))]), minlength=256)[:19]
    present = int((counts > 0).sum())
    chance_miou, chance_acc = counts.max() / counts.sum() / present, counts.max() / counts.sum()
    scores = out["scores"]
    assert scores["miou"] > 4 * chance_miou, (scores["miou"], chance_miou)
    assert scores["pixel_accuracy"] > chance_acc + 0.2, (scores["pixel_accuracy"], chance_acc)

    # the checkpoint is a segmenter that `score` accepts, and scoring the test images repeats the result
    again = runner.invoke(app, ["-q", "segment-eval", "score", "--images", str(demo_world / "real_val"), "--labels", val,
                                "--segmenter", str(run / "checkpoints" / "latest.pt"), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["scores"]["miou"] == pytest.approx(scores["miou"], abs=1e-12)

    # an existing run is not replaced without --overwrite
    refused = runner.invoke(app, ["segment-eval", "train-and-test", "--train", real, "--test", val, "--steps", "1",
                                  "--out", str(run)])
    assert refused.exit_code == 1 and "--overwrite" in _one_error_line(refused)


def test_train_and_test_error_paths(demo_world, tmp_path):
    val = f"demo:{demo_world}?split=real_val"
    unknown = runner.invoke(app, ["segment-eval", "train-and-test", "--train", val, "--test", val, "--model", "unit",
                                  "--out", str(tmp_path / "r")])
    assert unknown.exit_code == 1 and "unknown segmenter model 'unit'" in _one_error_line(unknown)
    missing = runner.invoke(app, ["segment-eval", "train-and-test", "--train", str(tmp_path / "nope"), "--test", val,
                                  "--out", str(tmp_path / "r")])
    assert missing.exit_code == 1 and "nope" in _one_error_line(missing)
    (tmp_path / "unlabelled").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "unlabelled" / "a.png")
    no_labels = runner.invoke(app, ["segment-eval", "train-and-test", "--train", str(tmp_path / "unlabelled"),
                                    "--test", val, "--out", str(tmp_path / "r2")])
    assert no_labels.exit_code == 1 and "has no labels" in _one_error_line(no_labels)
    assert not (tmp_path / "r2").exists()                       # nothing written before the inputs are checked


def _label_ids(label):
    """trainIds -> Cityscapes / GTA5 labelIds (ignore -> 0, unlabeled)."""
    from cityscapesscripts.helpers.labels import trainId2label

    to_id = np.zeros(256, np.uint8)
    for train_id in range(19):
        to_id[train_id] = trainId2label[train_id].id
    return to_id[label]


def test_score_images_accepts_a_dataset_spec(world, tmp_path):
    root, labels = world
    gta = tmp_path / "gta"
    (gta / "images").mkdir(parents=True)
    (gta / "labels").mkdir()
    for k, label in enumerate(labels):
        Image.fromarray(colorize(label, SPACE)).save(gta / "images" / f"f{k}.png")
        Image.fromarray(_label_ids(label)).save(gta / "labels" / f"f{k}.png")
    for images, spec_labels in ((f"gta5:{gta}", f"gta5:{gta}"), (f"gta5:{gta}", f"folder:{root / 'ref'}"),
                                (f"folder:{root / 'samples'}?labels=none", f"folder:{root / 'ref'}")):
        result = runner.invoke(app, ["-q", "segment-eval", "score", "--images", images, "--labels", spec_labels,
                                     "--segmenter", str(root / "colour.pt"), "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["scores"]["miou"] == 1.0 and out["unmatched"] == 0 and out["images"] == images
    assert out["scored"] == 6                                           # the _sNN samples of the folder
    unknown = runner.invoke(app, ["segment-eval", "score", "--images", f"nokind:{gta}", "--labels",
                                  f"folder:{root / 'ref'}", "--segmenter", str(root / "colour.pt")])
    assert unknown.exit_code == 1 and "unknown dataset kind 'nokind'" in _one_error_line(unknown)


def test_score_label_space_reads_raw_label_ids(world, tmp_path):
    root, labels = world
    raw = tmp_path / "gta5_labels"
    raw.mkdir()
    for k, label in enumerate(labels):
        Image.fromarray(_label_ids(label)).save(raw / f"f{k}.png")
    args = ["segment-eval", "score", "--images", str(root / "samples"), "--labels", str(raw),
            "--segmenter", str(root / "colour.pt")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "--label-space" in _one_error_line(refused)
    result = runner.invoke(app, ["-q", *args, "--label-space", "gta5", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["scores"]["miou"] == 1.0 and out["scored"] == 6 and out["labels_read_as"] == "gta5"
    # labelIds read as trainIds are wrong: values above 18 are refused by name
    wrong = runner.invoke(app, ["-q", *args, "--label-space", "trainid"])
    assert wrong.exit_code == 1 and "raw values outside" in _one_error_line(wrong)
    bad = runner.invoke(app, [*args, "--label-space", "nope"])
    assert bad.exit_code == 1 and "gta5" in _one_error_line(bad) and "synthia" in _one_error_line(bad)


def test_score_help_lists_label_spaces_and_an_example():
    from s2rcli.inference import LABEL_FORMATS

    text = " ".join(runner.invoke(app, ["segment-eval", "score", "--help"], env={"COLUMNS": "200"}).output.split())
    assert all(name in text for name in LABEL_FORMATS) and "Example: s2r segment-eval score" in text
    assert "KIND:PATH" in text
