"""lab2pix-v1 and lab2pix-v2: shapes, masks, the sharpness negatives, the ablation switches,
exact resume, the registry contract and `s2r translate` from a folder of labels.

Tiny sizes (32x64), tiny widths and a random VGG keep it to seconds.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s2rcli.checkpoint import load_checkpoint
from s2rcli.cli.app import app
from s2rcli.device import DistInfo
from s2rcli.errors import S2RError
from s2rcli.losses import gan
from s2rcli.models import build_task, create_model, get_model_entry, list_models, model_from_checkpoint
from s2rcli.models.contract import LabelTranslator
from s2rcli.models.lab2pix.network import HPDiscriminator, Lab2Pix, PlainDiscriminator
from s2rcli.models.lab2pix.task import (blur_by_resampling, foreground_lookup, foreground_mask, hierarchical_adversarial,
                                        level_weights, mask_at, pyramid)
from s2rcli.training.config import preset_defaults
from s2rcli.training.loop import Observer, train
from s2rcli.training.observers import CheckpointObserver
from s2rcli.training.runner import train_run

from toy_task import MemoryDataset, one_torch_thread, write_folder_world  # noqa: F401 (autouse: one thread)

CPU = torch.device("cpu")
SIZE = [32, 64]
runner = CliRunner()


def make_task(name, seed=0, init_seed=0, n=4, **train):
    cfg = preset_defaults(name, "tiny")
    cfg["train"].update(vgg_weights="random", batch_size=2, log_every=1, **train)
    cfg["data"].update(size=list(SIZE), synthetic="mem", real="mem")
    cfg["seed"] = seed
    data = {"synthetic": MemoryDataset(n, (40, 72), seed=1), "real": MemoryDataset(n, (40, 72), seed=2)}
    torch.manual_seed(init_seed)
    model = create_model(name, **cfg["model_kwargs"])
    return build_task(model, cfg, data, DistInfo(), CPU), cfg


def recording():
    """An observer keeping every step's terms (as floats), and the list it fills."""
    steps = []

    class Record(Observer):
        def on_step_end(self, state, terms):
            steps.append({key: float(value) for key, value in terms.items()})

    return Record(), steps


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_folder_world(tmp_path_factory.mktemp("world"), n=4, size=(40, 72))


# --- registry and contract ----------------------------------------------------------------------------


def test_registered_with_the_papers_settings():
    assert {"lab2pix-v1", "lab2pix-v2"} <= set(list_models("translation", trainable=True))
    v1, v2 = get_model_entry("lab2pix-v1"), get_model_entry("lab2pix-v2")
    assert v1.input_kind == v2.input_kind == "label"
    assert v1.data == ("synthetic", "real") and v1.labelled == ("synthetic",)
    assert v2.data == ("real",) and v2.labelled == ("real",)
    p1, p2 = v1.preset("paper"), v2.preset("paper")
    assert p1["train"]["lr"] == 2e-4 and p1["train"]["betas"] == [0.5, 0.999] and p1["train"]["gan"] == "nonsaturating"
    assert p1["train"]["loss"] == {"gan": 1.0, "sharpness": 1.0, "consistency": 5e-6, "cycle_seg": 10.0}
    assert p1["train"]["fe_t"] == 2.0 and p1["model"]["scales"] == 3 and p1["model"]["z_dim"] == 128
    assert p2["train"]["betas"] == [0.0, 0.9] and p2["train"]["gan"] == "hinge" and p2["train"]["fe_t"] == 5.0
    assert p2["train"]["loss"]["perceptual"] == 10.0 and p2["train"]["loss"]["feat_match"] == 10.0
    assert p2["model"]["scales"] == 1 and not p2["model"]["lsca"]
    for name in ("lab2pix-v1", "lab2pix-v2"):
        for preset in ("tiny", "paper"):
            model = create_model(name, preset=preset)
            assert isinstance(model, LabelTranslator) and model.num_classes == 19
            assert model.label_space == "cityscapes19"
    assert create_model("lab2pix-v1", preset="paper").stride == 16


# --- the generator -----------------------------------------------------------------------------------


@pytest.mark.parametrize("switches", [{}, {"lsca": False}, {"dgnorm": False}, {"lsca": False, "dgnorm": False}])
def test_v1_generator_outputs_three_scales(switches):
    torch.manual_seed(0)
    model = create_model("lab2pix-v1", preset="tiny", **switches)
    labels = torch.randint(0, 19, (2, 32, 64))
    labels[:, :3] = 255
    images = model.G(labels, model.sample_noise(2))
    assert [tuple(x.shape) for x in images] == [(2, 3, 8, 16), (2, 3, 16, 32), (2, 3, 32, 64)]
    assert all(x.abs().max() <= 1 for x in images)
    sum(x.mean() for x in images).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.G.parameters())
    # the switches change the architecture: LSCA modules, the global encoder of DG-Norm
    assert (len(model.G.lsca) == 2) == switches.get("lsca", True)
    assert (model.G.global_encoder is not None) == switches.get("dgnorm", True)
    assert type(model.G.blocks[0]).__name__ == ("DGResBlock" if switches.get("dgnorm", True) else "SPADEResBlock")


def test_lsca_blends_with_its_attention_map():
    torch.manual_seed(0)
    lsca = create_model("lab2pix-v1", preset="tiny").G.lsca[0].eval()  # eval: spectral norm's power step is fixed
    low, high = torch.randn(1, lsca.lift.in_channels, 4, 8), torch.randn(1, lsca.lift.out_channels, 8, 16)
    label = torch.zeros(1, 20, 8, 16)
    fused, attention = lsca.fuse(low, high, label)
    lifted = lsca.lift(torch.nn.functional.interpolate(low, size=(8, 16), mode="nearest"))
    assert attention.shape == (1, 1, 8, 16) and 0 < attention.min() and attention.max() < 1
    assert torch.allclose(fused, lifted * attention + high * (1 - attention))


def test_generate_is_seeded_and_v2_has_one_output():
    torch.manual_seed(0)
    model = create_model("lab2pix-v2", preset="tiny")
    labels = torch.randint(0, 19, (1, 24, 40))  # 3 x 5 strides
    a = model.generate(labels, torch.Generator().manual_seed(1))
    b = model.generate(labels, torch.Generator().manual_seed(1))
    c = model.generate(labels, torch.Generator().manual_seed(2))
    assert a.shape == (1, 3, 24, 40) and torch.equal(a, b) and (a - c).abs().mean() > 1e-4
    assert len(model.generate(labels, all_scales=True)) == 1 and model.G.training
    with pytest.raises(S2RError, match="multiple of the model's stride 8"):
        model.generate(torch.zeros(1, 20, 40, dtype=torch.long))


# --- the discriminators --------------------------------------------------------------------------------


def test_hierarchical_discriminators_have_1_2_3_levels():
    task, _ = make_task("lab2pix-v1")
    D = task.nets["D"]
    assert D.levels == [1, 2, 3] and all(isinstance(d, HPDiscriminator) for d in D.nets)
    images = [torch.randn(2, 3, 32 // 4, 64 // 4), torch.randn(2, 3, 16, 32), torch.randn(2, 3, 32, 64)]
    for i, x in enumerate(images):
        logits, _ = task.criterion.discriminate(i, x, None)
        assert len(logits) == i + 1
        h, w = x.shape[-2:]
        assert [tuple(level.shape) for level in logits] == [(2, 1, h // 2 ** (3 + k), w // 2 ** (3 + k))
                                                             for k in range(i + 1)]
    assert task.criterion.vgg.training is False and not any(p.requires_grad for p in task.criterion.vgg.parameters())
    plain, _ = make_task("lab2pix-v1", hpd=False)
    assert plain.nets["D"].levels == [1, 1, 1] and all(isinstance(d, PlainDiscriminator) for d in plain.nets["D"].nets)
    assert sum(p.numel() for p in plain.nets["D"].parameters()) < sum(p.numel() for p in D.parameters())


def test_v2_discriminators_see_the_label():
    task, _ = make_task("lab2pix-v2")
    D = task.nets["D"]
    assert D.levels == [2, 3]  # two scales at this size, as the paper's 256x512 setting
    first_conv = D.nets[0].stem[0]
    assert first_conv.in_channels == 3 + 20  # RGB + one-hot of 19 classes and "unknown"


# --- foreground enhancement ---------------------------------------------------------------------------


def test_foreground_mask_mean_one_and_t_times_background():
    lookup = foreground_lookup("cityscapes19", ["car", "person", "traffic sign"])
    assert lookup[13] and lookup[11] and lookup[7] and not lookup[0] and not lookup[255]
    labels = torch.zeros(3, 16, 32, dtype=torch.long)
    labels[0, 4:8, 4:12] = 13        # a car
    labels[1, :, :] = 11             # all foreground
    labels[2, :2] = 255              # no foreground, some ignored pixels
    for t in (2.0, 5.0):
        mask = foreground_mask(labels, lookup, t)
        assert mask.shape == (3, 1, 16, 32)
        assert torch.allclose(mask.mean(dim=(1, 2, 3)), torch.ones(3))
        assert mask[0, 0, 5, 5] == pytest.approx(t * mask[0, 0, 0, 0].item())
        assert torch.allclose(mask[1:], torch.ones(2, 1, 16, 32))
        pooled = mask_at(mask, (3, 5))  # sizes that do not divide: renormalised to mean 1
        assert torch.allclose(pooled.mean(dim=(1, 2, 3)), torch.ones(3))


def test_fe_weights_the_adversarial_loss_and_its_switch_removes_it():
    torch.manual_seed(0)
    levels = [[torch.randn(2, 1, 2, 4)], [torch.randn(2, 1, 2, 4), torch.randn(2, 1, 1, 2)]]
    plain = hierarchical_adversarial("nonsaturating", levels, "fake")
    expected = sum(w * gan.pointwise("nonsaturating", x, "fake").mean()
                   for outs in levels for w, x in zip(level_weights(len(outs)), outs))
    assert plain.item() == pytest.approx(expected.item())
    assert level_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    mask = torch.ones(2, 1, 16, 32)
    mask[:, :, :8] = 3.0
    mask = mask / mask.mean()
    assert hierarchical_adversarial("nonsaturating", levels, "fake", mask).item() != pytest.approx(plain.item())
    task, _ = make_task("lab2pix-v1")
    labels = task.data.fixed_batch(2)["a_label"]
    assert task.criterion.mask(labels) is not None
    off, _ = make_task("lab2pix-v1", fe=False)
    assert off.criterion.mask(labels) is None


# --- sharpness -----------------------------------------------------------------------------------------


def test_blurred_real_images_enter_the_discriminators_as_fakes():
    task, _ = make_task("lab2pix-v1")
    batch = next(iter(task.data))
    real, n = batch["b"], batch["b"].shape[0]
    seen = []
    hooks = [d.register_forward_hook(lambda m, args, out: seen.append((args[0].detach(), out[0])))
             for d in task.nets["D"].nets]
    try:
        out = task.loss("D", batch, step=task.criterion.steps)  # lambda_2 fully ramped up
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 3 and "sharpness" in out
    reals = pyramid(real, 3)
    real_logits, blurred_logits = [], []
    for (inputs, logits), y in zip(seen, reals):
        assert inputs.shape[0] == 3 * n  # real, generated, blurred real in one pass
        assert torch.allclose(inputs[:n], y)
        assert torch.allclose(inputs[2 * n:], blur_by_resampling(y))
        assert not torch.allclose(inputs[2 * n:], y)
        real_logits.append([level[:n] for level in logits])
        blurred_logits.append([level[2 * n:] for level in logits])
    expected = 0.5 * (hierarchical_adversarial("nonsaturating", real_logits, "real")
                      + hierarchical_adversarial("nonsaturating", blurred_logits, "fake"))
    assert out["sharpness"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((out["adv"] + out["sharpness"]).item(), rel=1e-5)
    # lambda_2 ramps from 0 (V1's semantic setting)
    assert task.loss("D", batch, step=0)["loss"].item() == pytest.approx(out["adv"].item(), rel=1e-4)

    off, _ = make_task("lab2pix-v1", sharpness=False)
    seen.clear()
    hooks = [d.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0])) for d in off.nets["D"].nets]
    out = off.loss("D", next(iter(off.data)), 0)
    for h in hooks:
        h.remove()
    assert seen == [2 * n] * 3 and "sharpness" not in out


def test_blur_is_down_then_up_sampling():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = blur_by_resampling(x)
    assert y.shape == x.shape
    assert torch.allclose(y[0, 0, 0, 0], torch.tensor(2.5))  # the top-left 2x2 average, where no neighbour blends in
    flat = torch.ones(1, 3, 8, 8)
    assert torch.allclose(blur_by_resampling(flat), flat)


# --- every phase of both versions ----------------------------------------------------------------------


@pytest.mark.parametrize("name,opts", [
    ("lab2pix-v1", {}), ("lab2pix-v1", {"hpd": False, "consistency": False}), ("lab2pix-v1", {"gan": "hinge"}),
    ("lab2pix-v2", {}), ("lab2pix-v2", {"hpd": False, "feat_match": False, "d_scales": 3, "perceptual": False}),
])
def test_phases_give_finite_terms_and_gradients(name, opts):
    task, _ = make_task(name, **opts)
    batch = next(iter(task.data))
    for phase in task.phases:
        for net in task.nets.values():
            net.zero_grad(set_to_none=True)
        out = task.loss(phase.name, batch, 3)
        assert all(torch.isfinite(v).all() for v in out.values()), (phase.name, out)
        out["loss"].backward()
        for net_name in phase.nets:
            grads = [p.grad for p in task.nets[net_name].parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads), net_name


def test_consistency_compares_adjacent_scales_by_norm_or_squared_distance():
    norm, _ = make_task("lab2pix-v1", consistency_layers=["relu1_2"])
    squared, _ = make_task("lab2pix-v1", consistency_layers=["relu1_2"], consistency_distance="squared")
    x2 = torch.rand(1, 3, 16, 32) * 2 - 1
    x1 = torch.nn.functional.avg_pool2d(x2, 2)  # exactly the pooled finer scale: consistent
    features = [norm.criterion.vgg_features(x1, ["relu1_2"])]
    assert norm.criterion.consistency_loss([x1, x2], features).item() == pytest.approx(0.0, abs=1e-5)
    other = torch.rand(1, 3, 8, 16) * 2 - 1
    features = [norm.criterion.vgg_features(other, ["relu1_2"])]
    distance = norm.criterion.consistency_loss([other, x2], features).item()
    assert distance > 0
    assert squared.criterion.consistency_loss([other, x2], features).item() == pytest.approx(distance ** 2, rel=1e-4)


def test_bad_options_are_user_errors():
    with pytest.raises(S2RError, match="unknown loss terms"):
        make_task("lab2pix-v1", loss={"perceptual": 1.0})
    with pytest.raises(S2RError, match="train.hpd must be true or false"):
        make_task("lab2pix-v1", hpd="no")
    with pytest.raises(S2RError, match="consistency_distance must be norm or squared"):
        make_task("lab2pix-v1", consistency_distance="l1")
    with pytest.raises(S2RError, match="fe_t must be >= 1"):
        make_task("lab2pix-v2", fe_t=0.5)
    with pytest.raises(S2RError, match="multiples of 32"):
        cfg = preset_defaults("lab2pix-v1", "tiny")
        cfg["train"]["vgg_weights"] = "random"
        cfg["data"]["size"] = [48, 64]
        build_task(create_model("lab2pix-v1", preset="tiny"), cfg,
                   {"synthetic": MemoryDataset(2), "real": MemoryDataset(2, seed=1)}, DistInfo(), CPU)
    with pytest.raises(S2RError, match="too small for the consistency layers"):
        make_task("lab2pix-v1", consistency_layers=["relu5_2"])


# --- the switches, through the real engine ----------------------------------------------------------------


SWITCHES = [
    ("lab2pix-v1", "sharpness", "D/sharpness"), ("lab2pix-v1", "consistency", "G/consistency"),
    ("lab2pix-v1", "cycle_seg", "G/cycle_seg"), ("lab2pix-v2", "sharpness", "D/sharpness"),
    ("lab2pix-v2", "perceptual", "G/perceptual"), ("lab2pix-v2", "feat_match", "G/feat_match"),
]


def _train(name, run, world, sets=()):
    options = {"data.real": world["real"], "data.size": SIZE, "train.steps": 2, "train.vgg_weights": "random"}
    if name == "lab2pix-v1":
        options["data.synthetic"] = world["synthetic"]
    state = train_run(name, run, preset="tiny", options=options,
                      sets=["train.log_every=1", "train.sample_every=1000", "train.batch_size=1", *sets])
    records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return state, records


@pytest.mark.parametrize("name", ["lab2pix-v1", "lab2pix-v2"])
def test_full_run_logs_every_term(tmp_path, world, name):
    state, records = _train(name, tmp_path / "run", world)
    assert state.step == 2 and [r["step"] for r in records] == [1, 2]
    expected = {term for model, _, term in SWITCHES if model == name} | {"D/adv", "G/adv", "D/loss", "G/loss"}
    for record in records:
        assert expected <= set(record), sorted(record)
        assert all(math.isfinite(v) for k, v in record.items() if k != "step")
    assert (tmp_path / "run" / "samples" / "step_000002.png").exists()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["model"] == name


@pytest.mark.parametrize("name,switch,term", SWITCHES)
def test_each_switch_removes_its_term_from_the_metrics(tmp_path, world, name, switch, term):
    state, records = _train(name, tmp_path / "run", world, [f"train.{switch}=false"])
    assert state.step == 2
    for record in records:
        assert term not in record
        others = {t for model, s, t in SWITCHES if model == name and s != switch}
        assert others <= set(record)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"][switch] is False


def test_architecture_and_weighting_switches_train(tmp_path, world):
    sets = ["train.hpd=false", "train.fe=false", "model_kwargs.lsca=false", "model_kwargs.dgnorm=false"]
    state, records = _train("lab2pix-v1", tmp_path / "run", world, sets)
    assert state.step == 2 and {"D/adv", "G/adv", "G/cycle_seg"} <= set(records[-1])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    for item in sets:
        section, option = item.split("=")[0].split(".")
        assert config[section][option] is False


# --- resume --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lab2pix-v1", "lab2pix-v2"])
def test_training_resumes_exactly(tmp_path, name):
    full, full_terms = recording()
    task, cfg = make_task(name, steps=4)
    train(task, steps=4, device=CPU, config=cfg, observers=[full], seed=0)

    first, first_terms = recording()
    task, cfg = make_task(name, steps=4)
    train(task, steps=2, device=CPU, config=cfg, observers=[first, CheckpointObserver(tmp_path, every=100)], seed=0)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 2 and {"G", "D", "G_ema"} <= set(ckpt["state_dicts"])
    assert set(ckpt["schedulers"]) == {"G", "D"}

    second, second_terms = recording()
    fresh, cfg = make_task(name, steps=4, init_seed=7)  # other initial weights: the checkpoint must replace them
    train(fresh, steps=4, device=CPU, config=cfg, observers=[second], seed=0, resume=ckpt)
    assert len(full_terms) == 4 and len(second_terms) == 2
    for a, b in zip(full_terms, first_terms + second_terms):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), (a, b)

    model, _ = model_from_checkpoint(ckpt)
    assert isinstance(model, Lab2Pix) and not model.training
    labels = torch.randint(0, 19, (1, 32, 64))
    raw, _ = model_from_checkpoint(ckpt, prefer_ema=False)
    assert torch.equal(raw.G.state_dict()["fc.weight"], ckpt["state_dicts"]["G"]["fc.weight"])
    assert model.generate(labels, torch.Generator().manual_seed(0)).shape == (1, 3, 32, 64)


def test_sample_grid_layout():
    task, _ = make_task("lab2pix-v1", sample_draws=2)
    batch = task.data.fixed_batch(2)
    grid = task.samples(batch)
    h, w = SIZE
    cols = 6  # label colours | synthetic | X1 | X2 (draw 0, upsampled) | X3 of draws 0 and 1
    assert grid.shape == (3, 2 * (h + 2) + 2, cols * (w + 2) + 2) and 0 <= grid.min() and grid.max() <= 1
    v2, _ = make_task("lab2pix-v2", sample_draws=3)
    assert v2.samples(v2.data.fixed_batch(2)).shape == (3, 2 * (h + 2) + 2, 5 * (w + 2) + 2)


# --- the command line ------------------------------------------------------------------------------------


def test_v1_without_synthetic_is_one_line_exit_1(tmp_path, world):
    result = runner.invoke(app, ["-q", "--device", "cpu", "train", "lab2pix-v1", "--preset", "tiny", "--real",
                                 world["real"], "--out", str(tmp_path / "run"), "--vgg-weights", "random"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--synthetic is required" in lines[0]
    assert not (tmp_path / "run").exists()


def test_v2_without_labels_is_refused(tmp_path):
    for sub in ("images",):
        (tmp_path / "real" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "real" / "images" / "a.png")
    result = runner.invoke(app, ["-q", "--device", "cpu", "train", "lab2pix-v2", "--preset", "tiny", "--real",
                                 f"folder:{tmp_path / 'real'}", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "has no labels" in result.output


@pytest.mark.parametrize("name", ["lab2pix-v1", "lab2pix-v2"])
def test_cli_train_then_translate_a_folder_of_labels(tmp_path, world, name):
    run = tmp_path / "run"
    data = (["--synthetic", world["synthetic"]] if name == "lab2pix-v1" else []) + ["--real", world["real"]]
    result = runner.invoke(app, ["-q", "--device", "cpu", "train", name, "--preset", "tiny", *data, "--out", str(run),
                                 "--size", "32x64", "--steps", "2", "--batch-size", "1", "--vgg-weights", "random",
                                 "--set", "train.sample_every=1"])
    assert result.exit_code == 0, result.output
    assert (run / "samples" / "step_000002.png").exists() and (run / "losses.png").exists()

    labels = Path(world["synthetic"].split(":", 1)[1]) / "labels"  # 40x72 label PNGs: padded to stride 8
    out = tmp_path / "generated"
    result = runner.invoke(app, ["-q", "--device", "cpu", "translate", "--checkpoint", str(run), "--input",
                                 str(labels), "--output", str(out), "--samples", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    name0 = sorted(labels.iterdir())[0].stem
    a, b = (np.asarray(Image.open(out / "images" / f"{name0}_s0{s}.png")) for s in (0, 1))
    assert a.shape == (40, 72, 3)
    assert not np.array_equal(a, b)  # two noise draws (z enters once, so untrained they differ little)
