import math

import numpy as np
import pytest
import torch
from torch import nn

from s2rcli.models import build_task
from s2rcli.errors import S2RError
from s2rcli.losses.gan import r1_penalty
from s2rcli.models import create_model, get_model_entry, list_models
from s2rcli.models.sis.network import SIS, WaveletDiscriminator, encode_labels
from s2rcli.models.sis.task import check_training_size
from s2rcli.checkpoint import load_checkpoint
from s2rcli.models import model_from_checkpoint
from s2rcli.device import DistInfo
from s2rcli.training.loop import Observer, train
from s2rcli.training.observers import CheckpointObserver

from toy_task import one_torch_thread  # noqa: F401 (autouse: one intra-op thread)

CPU = torch.device("cpu")
SIZE = (16, 32)
# The tiny preset with the shallowest VGG taps: the same code paths, a fraction of the CPU time.
FAST_MODEL = dict(d_layers=["relu2_2"], dl_width=16, dl_groups=4, du_channels=[16, 32, 32])
FAST_ALIGN = ["relu1_2", "relu2_2"]


class FakeDataset:
    """In-memory stand-in for a Dataset: blocky label maps, images coloured by class."""

    def __init__(self, n, seed, labels=True, size=(40, 72)):
        g = np.random.default_rng(seed)
        h, w = size
        self.labels = [g.integers(0, 19, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w].astype(np.uint8)
                       for _ in range(n)]
        for lab in self.labels:
            lab[:3] = 255  # an ignored band at the top
        palette = g.integers(0, 256, (256, 3)).astype(np.uint8)
        self.images = [palette[lab] for lab in self.labels]
        self.has_labels = labels
        self.names = [f"img{i}" for i in range(n)]

    def __len__(self):
        return len(self.images)

    def read_image(self, i):
        return self.images[i]

    def read_label(self, i):
        if not self.has_labels:
            raise S2RError("no labels")
        return self.labels[i]


def make_cfg(seed=0, **train):
    base = {"batch_size": 2, "lr": 2e-4, "betas": [0.0, 0.999], "vgg_weights": "random", "align_layers": FAST_ALIGN,
            "checkpoint_every": 100, "sample_every": 100, "log_every": 1, "accumulate": 1, "ema_decay": 0.9}
    base.update(train)
    return {"model": "sis", "preset": "tiny", "model_kwargs": dict(FAST_MODEL), "seed": seed,
            "label_space": "cityscapes19", "data": {"size": list(SIZE), "flip": True, "scale_jitter": 0.1},
            "train": base}


def make_task(seed=0, init_seed=0, **train):
    cfg = make_cfg(seed, **train)
    torch.manual_seed(init_seed)
    model = create_model("sis", preset="tiny", **FAST_MODEL)
    data = {"synthetic": FakeDataset(6, 0), "real": FakeDataset(5, 1, labels=False)}
    return build_task(model, cfg, data, DistInfo(), CPU), cfg


class Recorder(Observer):
    def __init__(self):
        self.terms = []

    def on_step_end(self, state, terms):
        self.terms.append({k: float(v) for k, v in terms.items()})


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("sis", preset="tiny")


def test_registered_with_presets():
    assert "sis" in list_models("translation")
    entry = get_model_entry("sis")
    assert entry.input_kind == "label" and set(entry.presets) >= {"tiny", "paper"}
    paper = entry.preset("paper")["train"]
    assert paper["size"] == [256, 512] and paper["batch_size"] == 2 and paper["lr"] == 1e-4
    assert paper["align_patches"] == 4 and paper["disc_patches"] == [1, 4] and paper["r1_every"] == 4
    assert paper["loss"]["r1"] == 10.0 and paper["gan"] == "nonsaturating"
    assert create_model("sis", preset="paper").stride == 32


def test_encode_labels_ignore_modes():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    chan = encode_labels(labels, 3, "channel")
    zero = encode_labels(labels, 3, "zero")
    assert chan.shape == (1, 4, 2, 2) and zero.shape == (1, 3, 2, 2)
    assert torch.equal(chan.sum(1), torch.ones(1, 2, 2))
    assert chan[0, 3, 1, 0] == 1 and chan[0, 3].sum() == 1
    assert zero[0, :, 1, 0].sum() == 0 and zero[0, 2, 0, 1] == 1
    with pytest.raises(S2RError, match=r"\[3, 40\]"):
        encode_labels(torch.tensor([[[3, 40], [255, 0]]]), 3)


def test_every_component_forward_backward_at_tiny(tiny):
    labels = torch.randint(0, 19, (2, 64, 128))
    labels[:, :4] = 255
    fake = tiny.G(labels, tiny.sample_noise(2))
    assert fake.shape == (2, 3, 64, 128) and fake.abs().max() <= 1
    score = tiny.D_u(fake)
    assert score.shape == (2, 1)
    feats = {"relu2_2": torch.randn(8, 128, 16, 32), "relu3_3": torch.randn(8, 256, 8, 16)}
    maps = tiny.D_l(feats)
    assert [m.shape for m in maps] == [(8, 1, 16, 32), (8, 1, 8, 16)]
    (score.mean() + sum(m.mean() for m in maps)).backward()
    for net in (tiny.G, tiny.D_u, tiny.D_l):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert sum(p.grad.abs().sum() for p in net.parameters()) > 0
        net.zero_grad()


def test_wavelet_discriminator_takes_whole_images_and_patches():
    d = WaveletDiscriminator([8, 16, 16, 16])
    for size in [(64, 128), (32, 64), (16, 32), (10, 14)]:
        assert d(torch.randn(3, 3, *size)).shape == (3, 1)


def test_generate_any_stride_multiple_and_seeds(tiny):
    assert tiny.stride == 8
    labels = torch.randint(0, 19, (1, 40, 72))  # 5 x 9 strides: odd multiples
    draws = [tiny.generate(labels, torch.Generator().manual_seed(s)) for s in (0, 1, 2)]
    assert all(d.shape == (1, 3, 40, 72) for d in draws)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert (draws[a] - draws[b]).abs().mean() > 1e-3
    again = tiny.generate(labels, torch.Generator().manual_seed(1))
    assert torch.equal(again, draws[1])
    assert tiny.G.training  # generate leaves the training mode as it was
    with pytest.raises(S2RError, match="multiple of the model's stride 8"):
        tiny.generate(torch.zeros(1, 36, 72, dtype=torch.long))


def test_label_edit_changes_only_its_neighbourhood(tiny):
    labels = torch.full((1, 64, 128), 0)
    edited = labels.clone()
    edited[:, 40:56, 96:120] = 13  # paint a car
    a = tiny.generate(labels, torch.Generator().manual_seed(0))
    b = tiny.generate(edited, torch.Generator().manual_seed(0))
    diff = (a - b).abs().sum(1)[0]
    # instance norm spreads a little of any edit everywhere; the edited region changes most
    assert diff[40:56, 96:120].mean() > 3 * diff[:16, :48].mean()


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 1)).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    analytic = r1_penalty(d(x), x).item()
    eps = 1e-6
    grads = torch.zeros_like(x)
    flat, gflat = x.detach().view(-1), grads.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            plus, minus = flat.clone(), flat.clone()
            plus[i] += eps
            minus[i] -= eps
            gflat[i] = (d(plus.view_as(x)).sum() - d(minus.view_as(x)).sum()) / (2 * eps)
    numeric = grads.pow(2).flatten(1).sum(1).mean().item()
    assert analytic == pytest.approx(numeric, rel=1e-6)


def test_lazy_r1_phase_is_scaled_by_interval():
    task, cfg = make_task(r1_every=4)
    phases = {p.name: p for p in task.phases}
    assert phases["D_r1"].every == 4 and phases["D_r1"].nets == ("D_u",)
    batch = next(iter(task.data))
    out = task.loss("D_r1", batch, 0)
    real = batch["b"].detach().requires_grad_(True)
    expected = 10.0 / 2 * 4 * r1_penalty(task.model.D_u(real), real)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["r1"].item() > 0


@pytest.mark.parametrize("opts", [
    {"align_patches": 1}, {"align_patches": 16}, {"disc_patches": [4, 4]}, {"disc_patches": [1, 1]},
    {"disc_patches": [1, 16]}, {"loss": {"align": 0.0}}, {"generate_patches": 4, "align_patches": 1},
])
def test_ablation_options_give_finite_terms(opts):
    task, _ = make_task(**opts)
    batch = next(iter(task.data))
    for phase in ("D", "D_r1", "G"):
        out = task.loss(phase, batch, 0)
        assert all(torch.isfinite(v).all() for v in out.values()), (phase, out)
        assert out["loss"].requires_grad
    g = task.loss("G", batch, 0)
    if opts.get("loss", {}).get("align") == 0:
        assert g["loss"].item() == pytest.approx(g["adv_u"].item() + g["adv_l"].item(), rel=1e-5)
    else:
        assert g["align"] > 0


def test_config_d_generates_and_aligns_patches_only():
    task, _ = make_task(generate_patches=4, align_patches=1)
    batch = next(iter(task.data))
    seen = []
    hook = task.model.G.register_forward_hook(lambda m, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    try:
        task.loss("G", batch, 0)
    finally:
        hook.remove()
    b, (h, w) = batch["a"].shape[0], SIZE
    assert seen == [((4 * b, h // 2, w // 2), (4 * b, 3, h // 2, w // 2))]  # label patches in, image patches out
    with pytest.raises(S2RError, match="multiples of 16"):
        check_training_size([24, 32], 8, 1, [1, 4], generate_patches=4)


def test_bad_options_are_user_errors():
    with pytest.raises(S2RError, match="patch"):
        make_task(align_patches=8)
    with pytest.raises(S2RError, match="unknown sis loss terms"):
        make_task(loss={"cycle": 1.0})
    cfg = make_cfg()
    cfg["data"]["size"] = [36, 64]
    model = create_model("sis", preset="tiny", **FAST_MODEL)
    with pytest.raises(S2RError, match="multiples of 8"):
        build_task(model, cfg, {"synthetic": FakeDataset(2, 0), "real": FakeDataset(2, 1, False)}, DistInfo(), CPU)


def test_alignment_only_training_lowers_the_alignment_term():
    task, _ = make_task(lr=2e-3, loss={"gan_u": 0.0, "gan_l": 0.0, "align": 1.0, "r1": 0.0})
    assert [p.name for p in task.phases] == ["D", "G"]
    fixed = task.data.fixed_batch(4)

    def align_on_fixed_batch():
        torch.manual_seed(123)  # the same noise before and after
        with torch.no_grad():
            return task.loss("G", fixed, 0)["align"].item()

    before = align_on_fixed_batch()
    train(task, steps=16, device=CPU, seed=0)
    after = align_on_fixed_batch()
    assert after < 0.75 * before, (before, after)


def test_training_checkpoints_and_resumes_exactly(tmp_path):
    full = Recorder()
    task, cfg = make_task()
    train(task, steps=5, device=CPU, config=cfg, observers=[full], seed=0)
    assert [("D_r1/r1" in t) for t in full.terms] == [True, False, False, False, True]
    for t in full.terms:
        assert all(math.isfinite(v) for v in t.values()), t
        assert {"D/adv_u", "D/adv_l", "G/adv_u", "G/adv_l", "G/align"} <= set(t)

    first = Recorder()
    task, cfg = make_task()
    train(task, steps=3, device=CPU, config=cfg, observers=[first, CheckpointObserver(tmp_path, every=100)], seed=0)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["model"] == "sis" and ckpt["step"] == 3 and ckpt["label_space"] == "cityscapes19"
    assert set(ckpt["state_dicts"]) == {"G", "D_u", "D_l", "G_ema"}
    assert set(ckpt["optimizers"]) == {"G", "D"}

    second = Recorder()
    fresh, cfg = make_task(init_seed=7)  # different initial weights: the checkpoint must replace them
    train(fresh, steps=5, device=CPU, config=cfg, observers=[second], seed=0, resume=ckpt)
    for a, b in zip(full.terms, first.terms + second.terms):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), (a, b)

    model, _ = model_from_checkpoint(ckpt)
    assert isinstance(model, SIS) and model.num_classes == 19 and not model.training
    labels = torch.randint(0, 19, (1, 32, 64))
    ema = model.generate(labels, torch.Generator().manual_seed(3))
    raw, _ = model_from_checkpoint(ckpt, prefer_ema=False)
    assert not torch.equal(ema, raw.generate(labels, torch.Generator().manual_seed(3)))
    assert torch.equal(raw.G.state_dict()["to_rgb.weight"], ckpt["state_dicts"]["G"]["to_rgb.weight"])


def test_sample_grid_layout():
    task, _ = make_task(sample_draws=3)
    batch = task.data.fixed_batch(2)
    grid = task.samples(batch)
    h, w = SIZE
    rows, cols = 2, 5  # label colours | synthetic | 3 draws
    assert grid.shape == (3, rows * (h + 2) + 2, cols * (w + 2) + 2)
    assert 0 <= grid.min() and grid.max() <= 1
    tile = lambda r, c: grid[:, 2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w]  # noqa: E731
    assert torch.allclose(tile(0, 1), (batch["a"][0] + 1) / 2)
    assert (tile(0, 2) - tile(0, 3)).abs().mean() > 1e-3  # different noise draws


def test_label_space_of_the_run_decides_the_classes():
    cfg = make_cfg()
    cfg["label_space"] = "cityscapes34"
    model = create_model("sis", preset="tiny", **FAST_MODEL)
    task = build_task(model, cfg, {"synthetic": FakeDataset(2, 0), "real": FakeDataset(2, 1, False)}, DistInfo(), CPU)
    assert task.model.num_classes == 34 and task.model_kwargs["label_space"] == "cityscapes34"
    assert task.label_space == "cityscapes34"


def test_cli_train_then_generate_from_a_folder_of_labels(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from s2rcli.cli.app import app

    for domain, seed in (("syn", 0), ("real", 1)):
        ds = FakeDataset(3, seed, size=(24, 48))
        for i in range(3):
            (tmp_path / domain / "images").mkdir(parents=True, exist_ok=True)
            (tmp_path / domain / "labels").mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i]).save(tmp_path / domain / "images" / f"{i:03d}.png")
            Image.fromarray(ds.labels[i]).save(tmp_path / domain / "labels" / f"{i:03d}.png")
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "-q", "--device", "cpu", "train", "sis", "--preset", "tiny", "--synthetic", str(tmp_path / "syn"),
        "--real", str(tmp_path / "real"), "--out", str(run), "--size", "16x32", "--steps", "2",
        "--vgg-weights", "random", "--set", 'model_kwargs.d_layers=["relu2_2"]',
        "--set", 'train.align_layers=["relu1_2","relu2_2"]', "--set", "train.sample_every=1",
    ])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 2
    assert (run / "samples" / "step_000002.png").exists()

    out = tmp_path / "generated"
    result = runner.invoke(app, ["-q", "--device", "cpu", "translate", "--checkpoint", str(run),
                                 "--input", str(tmp_path / "syn" / "labels"), "--output", str(out),
                                 "--samples", "2", "--seed", "5"])
    assert result.exit_code == 0, result.output
    a, b = (np.asarray(Image.open(out / "images" / f"001_s0{s}.png")) for s in (0, 1))
    assert a.shape == (24, 48, 3) and np.abs(a.astype(int) - b.astype(int)).mean() > 0.5  # 24x48: padded to stride 8
