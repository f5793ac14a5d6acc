"""SAIT: the SPADE-guided generator, the named loss terms and their switches, the segmenter copied
into the run, the missing --segmenter error, and exact resume."""

import json
import shutil

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from s2rcli.checkpoint import load_checkpoint
from s2rcli.cli.app import app
from s2rcli.data.demo import write_demo_world
from s2rcli.device import DistInfo
from s2rcli.models import build_task, create_model
from s2rcli.models.blocks import SPADEResBlock
from s2rcli.models.blocks.layers import LayerNorm2d, MultiScaleDiscriminator
from s2rcli.models.sait import LOSS_WEIGHTS, SAITLoss, semantic_consistency
from s2rcli.training.config import preset_defaults
from s2rcli.training.loop import Observer
from s2rcli.training.runner import train_run

from toy_task import MemoryDataset, one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()
SEG = dict(num_classes=19, widths=[4, 8, 16], encoder_blocks=[1, 1], decoder_blocks=[1, 1], dropout=[0.0, 0.0])
SMALL = dict(channels=8, n_down=2, n_res=2, n_shared=1, share=True, spade=True, spade_hidden=8, spectral=True,
             d_channels=8, d_layers=2, d_scales=2, segmenter="fastseg", segmenter_kwargs=SEG)


class ConvSegmenter(nn.Module):
    """A segmenter whose logits clearly depend on the image (an untrained tiny fastseg's barely do)."""

    num_classes = 19

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 19, 3, padding=1)

    def forward(self, x):
        return 4 * self.conv(x)


def _net(**overrides):
    """A small SAIT whose M is a :class:`ConvSegmenter` (seeded: the same weights every time)."""
    torch.manual_seed(0)
    net = create_model("sait", **{**SMALL, **overrides})
    net.attach_segmenter(ConvSegmenter(), "conv", {})
    return net


def _x(b=1, h=32, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def _batch(seed=0):
    return {"a": _x(seed=seed), "b": _x(seed=seed + 1)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sait_world")
    write_demo_world(root, n_synthetic=6, n_real=4, n_real_val=4, size=(32, 64), seed=0)
    seg = root / "seg"
    result = runner.invoke(app, ["--quiet", "train", "fastseg", "--preset", "tiny", "--data",
                                 f"train=demo:{root}?split=synthetic", "--size", "32x64", "--batch-size", "2",
                                 "--steps", "2", "--out", str(seg)])
    assert result.exit_code == 0, result.output
    return {"syn": f"demo:{root}?split=synthetic", "real": f"demo:{root}?split=real",
            "val": f"demo:{root}?split=real_val", "seg": seg}


def test_paper_preset_matches_the_paper():
    cfg = preset_defaults("sait", "paper")
    assert cfg["train"]["loss"] == {"recon_x": 10.0, "gan": 1.0, "cyc_x": 10.0, "cyc_z": 1.0, "sce": 10.0}
    assert cfg["train"]["betas"] == [0.9, 0.99] and cfg["train"]["poly_power"] == 0.9
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["d_lr"] > cfg["train"]["lr"]  # TTUR
    assert cfg["train"]["lr_schedule"] == "poly" and cfg["train"]["gan_mode"] == "lsgan"
    net = create_model("sait", **cfg["model_kwargs"])
    # the decoders' residual blocks are IN + SPADE blocks conditioned on M's classes; up-sampling keeps LN
    spade = [m for m in net.G.modules() if isinstance(m, SPADEResBlock)]
    assert len(spade) == 2 * 3 + 1 and all(b.norm0.norm.__class__ is nn.InstanceNorm2d for b in spade)
    assert spade[0].norm0.shared[0].in_channels == net.M.num_classes == 19
    ups = [m for m in net.G.dec["a"] if m.__class__.__name__ == "UpBlock"]
    assert len(ups) == 2 and all(isinstance(u[1][1], LayerNorm2d) for u in ups)
    # spectral norm on every generator and discriminator conv but SPADE's embeddings
    assert isinstance(net.D["a"], MultiScaleDiscriminator) and len(net.D["a"].scales) == 3
    convs = [m for m in (*net.G.modules(), *net.D.modules()) if isinstance(m, nn.Conv2d)]
    in_spade = {id(c) for b in spade for s in (b.norm0, b.norm1) for c in s.modules()}
    assert all(hasattr(c, "parametrizations") == (id(c) not in in_spade) for c in convs)
    assert not any(p.requires_grad for p in net.M.parameters()) and not net.M.training
    net.train()
    assert not net.M.training  # M stays frozen, batch-norm statistics included


def test_loss_terms_are_named_and_weighted():
    net = _net()
    weights = {"recon_x": 10.0, "gan": 1.0, "cyc_x": 10.0, "cyc_z": 1.0, "sce": 10.0}
    assert weights == LOSS_WEIGHTS
    g = SAITLoss(net.G, net.D, net.M, weights).g_terms(_batch())
    assert set(g) == {"loss", "recon_x", "gan", "cyc_x", "cyc_z", "sce"}
    assert torch.allclose(g["loss"], sum(weights[k] * g[k] for k in weights))
    assert all(torch.isfinite(v) and v >= 0 for v in g.values())
    # after the G phase, the D phase learns from the same translations without running the generator
    batch, calls = _batch(), []
    criterion = SAITLoss(net.G, net.D, net.M, weights)
    criterion.g_terms(batch)
    net.G.encode = net.G.decode = lambda *args, **kwargs: calls.append(args)  # any generator call is counted
    criterion.d_terms(batch)
    assert not calls
    del net.G.encode, net.G.decode
    d = SAITLoss(net.G, net.D, net.M, {**weights, "gan": 2.0}).d_terms(_batch())
    assert set(d) == {"loss", "gan", "gan_a", "gan_b"} and torch.allclose(d["loss"], 2 * d["gan"])
    d["loss"].backward()
    assert all(p.grad is None for p in net.G.parameters())  # the D phase never reaches the generator
    # the SCE gradient reaches the generator through the frozen M, and M itself never learns
    net.zero_grad()
    SAITLoss(net.G, net.D, net.M, {k: float(k == "sce") for k in weights}).g_terms(_batch())["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.G.parameters())
    assert all(p.grad is None for p in net.M.parameters())


class IdentityG(nn.Module):
    """A translator that changes nothing: F(x) = x."""

    spade = False

    def encode(self, x, domain):
        return x

    def decode(self, z, domain, cond=None):
        return z


def test_sce_is_zero_when_the_predictions_agree_and_positive_otherwise():
    net = _net()
    x = _x()
    logits = net.M(x)
    assert semantic_consistency(logits, logits) == 0
    assert semantic_consistency(logits, logits.roll(1, dims=1)) > 0
    assert semantic_consistency(logits, net.M(_x(seed=3))) > 0
    # with an identity translator M(F(x)) = M(x): the term is exactly 0
    identity = SAITLoss(IdentityG(), net.D, net.M, LOSS_WEIGHTS).g_terms(_batch())
    assert identity["sce"] == 0 and identity["recon_x"] == 0 and identity["cyc_x"] == 0
    assert SAITLoss(net.G, net.D, net.M, LOSS_WEIGHTS).g_terms(_batch())["sce"] > 0


def test_each_switch_removes_or_changes_its_term():
    net = _net()
    calls = []
    net.M.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))  # images segmented
    no_sce = SAITLoss(net.G, net.D, net.M, {**LOSS_WEIGHTS, "sce": 0.0}).g_terms(_batch())
    assert "sce" not in no_sce and sum(calls) == 4  # M still conditions SPADE: the inputs and the translations
    calls.clear()
    plain = _net(spade=False)
    plain.M.register_forward_hook(lambda *_: calls.append(1))
    assert not any(isinstance(m, SPADEResBlock) for m in plain.G.modules())
    both_off = SAITLoss(plain.G, plain.D, plain.M, {**LOSS_WEIGHTS, "sce": 0.0}).g_terms(_batch())
    assert "sce" not in both_off and not calls  # the UNIT-like baseline never runs M
    only_sce = SAITLoss(plain.G, plain.D, plain.M, LOSS_WEIGHTS).g_terms(_batch())
    assert only_sce["sce"] > 0 and calls
    # the weights change the total, not the terms (eval: spectral norm's power iteration stands still)
    net.eval()
    a = SAITLoss(net.G, net.D, net.M, LOSS_WEIGHTS).g_terms(_batch())
    b = SAITLoss(net.G, net.D, net.M, {**LOSS_WEIGHTS, "cyc_z": 5.0}).g_terms(_batch())
    assert torch.allclose(a["cyc_z"], b["cyc_z"]) and torch.allclose(b["loss"] - a["loss"], 4 * a["cyc_z"])


def test_the_spade_condition_changes_the_output_only_with_spade():
    for spade in (True, False):
        net = _net(spade=spade).eval()
        x = _x()
        z = net.G.encode(x, "a")
        cond = torch.randn(1, 19, 32, 64)
        with torch.no_grad():
            y1, y2 = net.G.decode(z, "b", cond), net.G.decode(z, "b", cond * 3 + 1)
            before = net.translate(x)
            for p in net.M.parameters():  # another segmenter: other logits for the same image
                p.add_(torch.randn_like(p) * 0.5)
            after = net.translate(x)
        assert (not torch.allclose(y1, y2)) == spade
        assert (not torch.allclose(before, after)) == spade


def test_task_wires_ttur_poly_and_copies_the_segmenter(world):
    cfg = preset_defaults("sait", "tiny")
    cfg["data"].update(synthetic="mem", real="mem", size=[32, 64])
    cfg["train"]["segmenter"] = str(world["seg"])
    net = create_model("sait", **cfg["model_kwargs"])
    task = build_task(net, cfg, {"synthetic": MemoryDataset(2, (32, 64)), "real": MemoryDataset(2, (32, 64), seed=1)},
                      DistInfo(), "cpu")
    opt_g, opt_d = task.optimizers["G"].param_groups[0], task.optimizers["D"].param_groups[0]
    assert opt_g["betas"] == opt_d["betas"] == (0.9, 0.99) and opt_d["lr"] > opt_g["lr"]
    for _ in range(cfg["train"]["steps"] // 2):
        task.optimizers["G"].step()
        task.schedulers["G"].step()
    assert task.optimizers["G"].param_groups[0]["lr"] == pytest.approx(cfg["train"]["lr"] * 0.5 ** 0.9)
    seg = load_checkpoint(world["seg"])
    assert task.model_kwargs["segmenter"] == "fastseg" and task.model_kwargs["segmenter_kwargs"] == seg["model_kwargs"]
    assert all(torch.equal(v, seg["state_dicts"]["S"][k]) for k, v in task.nets["M"].state_dict().items())
    assert [p.name for p in task.phases] == ["G", "D"] and set(task.nets) == {"G", "D", "M"}


class StopAt(Observer):
    """Ctrl-C at the end of step ``step``, after its checkpoint is on disk: a killed run."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state, terms):
        if state.step == self.step:
            raise KeyboardInterrupt


def train_killed_at(step, model, run_dir, *, options):
    """Train ``model`` (tiny preset, a checkpoint every step) until it is killed after ``step``."""
    sets = ["train.checkpoint_every=1", "train.log_every=1"]
    with pytest.raises(KeyboardInterrupt):
        train_run(model, run_dir, preset="tiny", sets=sets, options=options, extra_observers=[StopAt(step)],
                  device=torch.device("cpu"))
    assert load_checkpoint(run_dir)["step"] == step


def _sait(world, out, steps, *extra):
    return runner.invoke(app, ["--quiet", "train", "sait", "--preset", "tiny", "--synthetic", world["syn"],
                               "--real", world["real"], "--size", "32x64", "--steps", str(steps), "--out", str(out),
                               "--set", "train.checkpoint_every=1", "--set", "train.log_every=1",
                               "--threads", "1", *extra])  # the module's one thread: exact comparisons


def test_missing_segmenter_is_one_line_exit_1_and_touches_nothing(world, tmp_path):
    result = _sait(world, tmp_path / "run", 2)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "sait needs a segmenter: pass --segmenter CKPT" in lines[0]
    assert not (tmp_path / "run").exists()
    missing = _sait(world, tmp_path / "run", 2, "--segmenter", str(tmp_path / "nope.pt"))
    assert missing.exit_code == 1 and "no such file" in missing.output and not (tmp_path / "run").exists()


def test_translate_needs_nothing_but_the_run(world, tmp_path):
    seg = tmp_path / "seg_copy"
    shutil.copytree(world["seg"], seg)
    result = _sait(world, tmp_path / "run", 2, "--segmenter", str(seg))
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"G/recon_x", "G/gan", "G/cyc_x", "G/cyc_z", "G/sce", "D/gan"} <= set(metrics[-1])
    shutil.rmtree(seg)  # the segmenter is gone: the run holds its copy
    out = tmp_path / "translated"
    result = runner.invoke(app, ["--quiet", "translate", "--checkpoint", str(tmp_path / "run"), "--input", world["syn"],
                                 "--output", str(out), "--size", "32x64"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "images").glob("*.png"))) == 6 and len(list((out / "labels").glob("*.png"))) == 6


def test_sait_resumes_exactly(world, tmp_path):
    full = _sait(world, tmp_path / "full", 4, "--segmenter", str(world["seg"]))
    assert full.exit_code == 0, full.output

    train_killed_at(2, "sait", tmp_path / "split", options={
        "data.synthetic": world["syn"], "data.real": world["real"], "data.size": [32, 64], "train.steps": 4,
        "train.segmenter": str(world["seg"])})
    again = runner.invoke(app, ["--quiet", "train", "sait", "--out", str(tmp_path / "split"), "--resume"])
    assert again.exit_code == 0, again.output

    def losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {r["step"]: (r["G/loss"], r["G/sce"], r["D/loss"]) for r in rows}

    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and a == b  # bit-identical continuation
    wa, wb = load_checkpoint(tmp_path / "full")["state_dicts"], load_checkpoint(tmp_path / "split")["state_dicts"]
    for net in ("G", "G_ema", "D", "M"):
        assert all(torch.equal(wa[net][k], wb[net][k]) for k in wa[net]), net
