"""SAIT's adaptation stage and what surrounds it: pseudo-labels (threshold, per-class kept share),
the loss terms, a checkpoint that segment-eval loads as a segmenter, `segment-eval test`, exact
resume, and the rounds driver picking up after a kill."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from s2rcli.checkpoint import load_checkpoint
from s2rcli.cli.app import app
from s2rcli.data.labels import get_label_space
from s2rcli.evaluation import load_segmenter
from s2rcli.models.adapt import pseudo_label, write_pseudo_labels
from s2rcli.models.adapt.task import resolve_loss_weights

from test_sait import train_killed_at, world  # noqa: F401 (the demo world and its segmenter)
from toy_task import MemoryDataset, one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()


def test_pseudo_labels_keep_only_confident_pixels():
    # 3 classes, 4 pixels: probabilities of the argmax 0.95, 0.9 (kept: >=), 0.6, 0.34
    probs = torch.tensor([[0.95, 0.03, 0.02], [0.05, 0.9, 0.05], [0.2, 0.2, 0.6], [0.33, 0.34, 0.33]])
    logits = probs.log().T.reshape(1, 3, 1, 4)
    labels = pseudo_label(logits, 0.9)
    assert labels.dtype == torch.uint8 and labels.tolist() == [[[0, 1, 255, 255]]]
    assert pseudo_label(logits, 0.5).tolist() == [[[0, 1, 2, 255]]]


class FixedSegmenter(nn.Module):
    """Predicts the same logits for every image: class 0 sure on the left half, class 2 unsure on the right."""

    num_classes = 19

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 19, *x.shape[-2:])
        w = x.shape[-1]
        logits[:, 0, :, : w // 2] = 10.0   # softmax ~ 0.9996
        logits[:, 2, :, w // 2:] = 1.0     # softmax ~ 0.13
        return logits


def test_pseudo_label_files_and_the_per_class_kept_share(tmp_path):
    data = MemoryDataset(3, (16, 24))
    space = get_label_space("cityscapes19")
    identity = {"segmenter": "fixed"}
    report = write_pseudo_labels(FixedSegmenter(), data, tmp_path / "pl", threshold=0.9, size=None,
                                 class_names=space.class_names, identity=identity)
    files = sorted(p.name for p in (tmp_path / "pl").glob("*.png"))
    assert files == ["m000.png", "m001.png", "m002.png"]  # named after the images
    label = np.asarray(Image.open(tmp_path / "pl" / "m000.png"))
    assert set(np.unique(label[:, :12])) == {0} and set(np.unique(label[:, 12:])) == {255}
    road, building = report["per_class"]["road"], report["per_class"]["building"]
    assert road == {"predicted": 3 * 16 * 12, "kept": 3 * 16 * 12, "share": 1.0}
    assert building == {"predicted": 3 * 16 * 12, "kept": 0, "share": 0.0}
    assert report["per_class"]["sky"]["share"] is None and report["kept_share"] == pytest.approx(0.5)
    saved = json.loads((tmp_path / "pl" / "report.json").read_text())
    assert saved["per_class"]["road"]["share"] == 1.0 and saved["identity"]["threshold"] == 0.9

    class Exploding(nn.Module):
        def forward(self, x):
            raise AssertionError("recomputed")

    # the same identity: reused as they are (a resumed run); another threshold: made again
    assert write_pseudo_labels(Exploding(), data, tmp_path / "pl", threshold=0.9, size=None,
                               class_names=space.class_names, identity=identity) == saved
    again = write_pseudo_labels(FixedSegmenter(), data, tmp_path / "pl", threshold=0.05, size=(8, 12),
                                class_names=space.class_names, identity=identity)
    assert again["per_class"]["building"]["share"] == 1.0
    assert np.asarray(Image.open(tmp_path / "pl" / "m000.png")).shape == (16, 24)  # the image's own resolution


def test_loss_weights_follow_the_segmenter():
    assert resolve_loss_weights({}, "fastseg") == {"seg": 1.0, "ssl": 1.0, "adv": 1e-3}
    assert resolve_loss_weights({}, "fcn")["adv"] == 1e-4   # the paper's FCN setting
    assert resolve_loss_weights({"adv": 0.5}, "fcn")["adv"] == 0.5


def _adapt(world, out, steps, *extra, source=None):
    return runner.invoke(app, ["--quiet", "train", "adapt", "--preset", "tiny", "--source", source or world["syn"],
                               "--real", world["real"], "--segmenter", str(world["seg"]), "--size", "32x64",
                               "--batch-size", "2", "--steps", str(steps), "--out", str(out),
                               "--set", "train.checkpoint_every=1", "--set", "train.log_every=1",
                               "--threads", "1", *extra])  # the module's one thread: exact comparisons


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_adapt_run_terms_pseudo_labels_and_a_plain_segmenter_checkpoint(world, tmp_path):
    result = _adapt(world, tmp_path / "run", 2)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    last = _metrics(run)[-1]
    assert {"S/seg", "S/ssl", "S/adv", "S/loss", "D/d"} <= set(last)
    assert last["S/loss"] == pytest.approx(last["S/seg"] + last["S/ssl"] + 1e-3 * last["S/adv"], rel=1e-5)
    report = json.loads((run / "pseudo_labels" / "report.json").read_text())
    assert report["identity"]["segmenter"] == str(world["seg"]) and report["identity"]["threshold"] == 0.9
    assert len(list((run / "pseudo_labels").glob("*.png"))) == 4
    # the adapted network loads like any segmenter, with the weights it was trained to
    model, ckpt, space = load_segmenter(run)
    assert ckpt["model"] == "adapt" and model.num_classes == space.num_classes == 19
    assert all(torch.equal(v, ckpt["state_dicts"]["S"][k]) for k, v in model.S.state_dict().items())
    # adv=0 removes the term and the discriminator's phase
    off = _adapt(world, tmp_path / "off", 1, "--set", "train.loss.adv=0")
    assert off.exit_code == 0, off.output
    assert "S/adv" not in _metrics(tmp_path / "off")[-1] and "D/d" not in _metrics(tmp_path / "off")[-1]


def test_missing_segmenter_is_one_line(world, tmp_path):
    result = runner.invoke(app, ["train", "adapt", "--source", world["syn"], "--real", world["real"],
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "adapt needs a segmenter" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_segment_eval_test_json_and_prediction_files(world, tmp_path):
    preds = tmp_path / "preds"
    result = runner.invoke(app, ["--quiet", "segment-eval", "test", "--segmenter", str(world["seg"]), "--test",
                                 world["val"], "--json", "--save-predictions", str(preds)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    scores = out["scores"]
    present = {k: v for k, v in scores["per_class_iou"].items() if v is not None}
    assert out["classes_present"] == len(present) > 0 and out["test_images"] == 4
    assert scores["miou"] == pytest.approx(sum(present.values()) / len(present))  # over the classes present
    # one trainId PNG per test image, named like it, that reproduces the scores
    from s2rcli.data.datasets import open_dataset
    from s2rcli.metrics.segmentation import ConfusionMatrix

    test_set = open_dataset(world["val"])
    assert sorted(p.stem for p in preds.glob("*.png")) == sorted(test_set.names)
    cm = ConfusionMatrix(19)
    for i, name in enumerate(test_set.names):
        pred = np.asarray(Image.open(preds / f"{name}.png"))
        assert pred.dtype == np.uint8 and pred.shape == test_set.read_label(i).shape and pred.max() < 19
        cm.update(pred, test_set.read_label(i))
    assert cm.scores().miou == pytest.approx(scores["miou"])
    wrong = runner.invoke(app, ["segment-eval", "test", "--segmenter", str(world["seg"]), "--test", world["real"]
                                .replace("split=real", "split=nope")])
    assert wrong.exit_code == 1 and len(wrong.output.strip().splitlines()) == 1


def test_adapt_resumes_exactly(world, tmp_path):
    full = _adapt(world, tmp_path / "full", 4)
    assert full.exit_code == 0, full.output

    train_killed_at(2, "adapt", tmp_path / "split", options={
        "data.source": world["syn"], "data.real": world["real"], "data.size": [32, 64], "train.batch_size": 2,
        "train.steps": 4, "train.segmenter": str(world["seg"]),
        "train.pseudo_labels": str(tmp_path / "split" / "pseudo_labels")})
    again = runner.invoke(app, ["--quiet", "train", "adapt", "--out", str(tmp_path / "split"), "--resume"])
    assert again.exit_code == 0, again.output
    key = ("S/loss", "S/ssl", "S/adv", "D/d")
    a = {r["step"]: tuple(r[k] for k in key) for r in _metrics(tmp_path / "full")}
    b = {r["step"]: tuple(r[k] for k in key) for r in _metrics(tmp_path / "split")}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and a == b  # bit-identical continuation
    wa, wb = load_checkpoint(tmp_path / "full")["state_dicts"], load_checkpoint(tmp_path / "split")["state_dicts"]
    for net in ("S", "D"):
        assert all(torch.equal(wa[net][k], wb[net][k]) for k in wa[net]), net


def test_rounds_driver_skips_finished_stages_after_a_kill(world, tmp_path, monkeypatch):
    import s2rcli.sait_rounds as rounds

    args = ["--quiet", "sait-rounds", "--synthetic", world["syn"], "--real", world["real"], "--segmenter",
            str(world["seg"]), "--out", str(tmp_path / "r"), "--rounds", "2", "--size", "32x64", "--sait-steps", "2",
            "--adapt-steps", "2", "--adapt-set", "train.batch_size=2", "--test", world["val"], "--json"]
    real_translate = rounds.translate_dataset
    calls = []

    def killed_in_round_2(checkpoint, *a, **kw):  # the driver dies while translating in round 2
        calls.append(str(checkpoint))
        if "round_2" in str(checkpoint) and len(calls) == 2:
            raise KeyboardInterrupt
        return real_translate(checkpoint, *a, **kw)

    monkeypatch.setattr(rounds, "translate_dataset", killed_in_round_2)
    first = runner.invoke(app, args)
    assert first.exit_code == 130
    done = tmp_path / "r" / "round_1"
    stamps = {p: p.stat().st_mtime_ns for p in (done / "sait/checkpoints/latest.pt", done / "adapt/checkpoints/latest.pt")}
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and all(0 <= r["miou"] <= 1 for r in summary["rounds"])
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # round 1 was not trained again
    sait2 = load_checkpoint(tmp_path / "r" / "round_2" / "sait")
    adapted1 = load_checkpoint(done / "adapt")["state_dicts"]["S"]
    assert all(torch.equal(v, adapted1[k]) for k, v in sait2["state_dicts"]["M"].items())  # guided by round 1's S
    assert (tmp_path / "r" / "round_2" / "adapt" / "pseudo_labels" / "report.json").is_file()
    assert (tmp_path / "r" / "round_2" / "results.json").is_file()
