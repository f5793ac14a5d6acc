"""UNIT: architecture, shared latent space, reduced VAE, loss terms and weights, task wiring."""

import pytest
import torch

from s2rcli.models import build_task
from s2rcli.errors import S2RError
from s2rcli.models import create_model
from s2rcli.models.blocks.layers import LayerNorm2d, MultiScaleDiscriminator
from s2rcli.models.unit import LOSS_WEIGHTS, UNITLoss
from s2rcli.training.config import preset_defaults
from s2rcli.device import DistInfo

from toy_task import MemoryDataset, one_torch_thread  # noqa: F401 (autouse fixture)

SMALL = dict(channels=8, n_down=2, n_res=2, n_shared=1, d_channels=8, d_layers=2, d_scales=2)


def _x(b=2, h=16, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def test_paper_preset_matches_the_design():
    cfg = preset_defaults("unit", "paper")
    assert cfg["data"]["size"] == [256, 512] and cfg["train"]["batch_size"] == 1
    assert cfg["train"]["loss"] == {"gan": 1.0, "recon_x": 10.0, "recon_kl": 0.01, "cyc_x": 10.0, "cyc_kl": 0.01,
                                    "vgg": 0.0, "sem": 0.0}
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["betas"] == [0.5, 0.999]
    assert cfg["train"]["weight_decay"] == 1e-4 and cfg["train"]["lr_step"] == 100000
    net = create_model("unit", **cfg["model_kwargs"])
    enc = net.G.enc["a"]
    first = enc[0][0]
    assert (first.in_channels, first.out_channels, first.kernel_size) == (3, 64, (7, 7))
    downs = [enc[1][0], enc[2][0]]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in downs] == [(128, (4, 4), (2, 2)), (256, (4, 4), (2, 2))]
    # 4 residual blocks per encoder: 3 private + 1 shared; the decoder mirrors it
    assert len(enc) - 3 + len(net.G.enc_shared) == 4
    ups = [m for m in net.G.dec["a"] if m.__class__.__name__ == "UpBlock"]
    assert len(ups) == 2 and all(isinstance(u[1][1], LayerNorm2d) and u[1][0].kernel_size == (5, 5) for u in ups)
    assert isinstance(net.D["a"], MultiScaleDiscriminator) and len(net.D["a"].scales) == 3
    assert net.stride == 4


def test_shapes_and_translation_range():
    net = create_model("unit", **SMALL).eval()
    x = _x()
    h = net.G.encode(x, "a")
    assert h.shape == (2, 32, 4, 6)
    for direction in ("a2b", "b2a"):
        y = net.translate(x, direction)
        assert y.shape == x.shape and y.abs().max() <= 1
    with pytest.raises(S2RError, match="unknown direction"):
        net.translate(x, "a2c")


def test_weight_sharing_is_an_option():
    shared = create_model("unit", **SMALL)
    separate = create_model("unit", **{**SMALL, "share": False})
    assert shared.G.enc_shared is shared.G._part(shared.G.enc_shared, "b")
    assert separate.G._part(separate.G.enc_shared, "a") is not separate.G._part(separate.G.enc_shared, "b")
    n_shared = sum(p.numel() for p in shared.G.enc_shared.parameters()) + \
        sum(p.numel() for p in shared.G.dec_shared.parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(separate.G) - count(shared.G) == n_shared
    # a gradient through domain a reaches the shared block that domain b also uses
    shared.G.encode(_x(), "a").sum().backward()
    assert shared.G.enc_shared[0].body[0][0].weight.grad is not None


def test_reduced_vae_noise_in_training_only():
    net = create_model("unit", **SMALL)
    x = _x()
    assert torch.equal(net.translate(x), net.translate(x))  # test time: z = h
    loss = UNITLoss(net.G, net.D, LOSS_WEIGHTS)
    torch.manual_seed(0)
    t1 = loss.g_terms(x, _x(seed=1))
    torch.manual_seed(1)
    t2 = loss.g_terms(x, _x(seed=1))
    assert not torch.equal(t1["recon_x"], t2["recon_x"])  # z = h + N(0, I) in training
    assert torch.equal(t1["recon_kl"], t2["recon_kl"])  # KL = mean(h^2) does not depend on the noise
    h_a, h_b = net.G.encode(x, "a"), net.G.encode(_x(seed=1), "b")
    assert torch.allclose(t1["recon_kl"], h_a.pow(2).mean() + h_b.pow(2).mean())


def test_loss_terms_and_weights():
    net = create_model("unit", **SMALL)
    weights = {"gan": 1.0, "recon_x": 10.0, "recon_kl": 0.01, "cyc_x": 10.0, "cyc_kl": 0.01, "vgg": 0.0}
    torch.manual_seed(0)
    g = UNITLoss(net.G, net.D, weights).g_terms(_x(), _x(seed=1))
    assert set(g) == {"loss", "gan", "recon_x", "recon_kl", "cyc_x", "cyc_kl"}
    expected = sum(weights[k] * g[k] for k in ("gan", "recon_x", "recon_kl", "cyc_x", "cyc_kl"))
    assert torch.allclose(g["loss"], expected)
    d = UNITLoss(net.G, net.D, {**weights, "gan": 2.0}).d_terms(_x(), _x(seed=1))
    assert torch.allclose(d["loss"], 2.0 * d["gan"]) and torch.allclose(d["gan"], d["gan_a"] + d["gan_b"])
    # the D phase never back-propagates into the generator
    d["loss"].backward()
    assert all(p.grad is None for p in net.G.parameters())
    assert any(p.grad is not None for p in net.D.parameters())


def test_vgg_term_uses_the_weights_resolver():
    net = create_model("unit", **SMALL)
    cfg = preset_defaults("unit", "tiny")
    cfg["data"].update(synthetic="mem", real="mem", size=[32, 48])
    cfg["train"]["loss"]["vgg"] = 1.0
    cfg["train"]["vgg_weights"] = "random"
    task = build_task(net, cfg, {"synthetic": MemoryDataset(2), "real": MemoryDataset(2, seed=1)}, DistInfo(), "cpu")
    terms = task.loss("G", next(iter(task.data)), 0)
    assert "vgg" in terms and torch.isfinite(terms["vgg"]) and terms["vgg"] > 0
    cfg["train"]["vgg_weights"] = "/no/such/vgg.pth"
    with pytest.raises(S2RError, match="--vgg-weights"):
        build_task(create_model("unit", **SMALL), cfg, {"synthetic": MemoryDataset(2), "real": MemoryDataset(2)},
                                                DistInfo(), "cpu")


def test_make_task_wires_phases_optimisers_and_schedule():
    cfg = preset_defaults("unit", "tiny")
    cfg["data"].update(synthetic="mem", real="mem", size=[32, 48])
    cfg["train"].update(lr=3e-4, lr_step=2, batch_size=2)
    net = create_model("unit", **SMALL)
    task = build_task(net, cfg, {"synthetic": MemoryDataset(3), "real": MemoryDataset(5, seed=1)}, DistInfo(), "cpu")
    assert [(p.name, p.nets) for p in task.phases] == [("D", ("D",)), ("G", ("G",))]
    opt = task.optimizers["G"]
    assert opt.param_groups[0]["lr"] == 3e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    assert task.ema == {"G_ema": "G"}
    for _ in range(2):
        opt.step()
        task.schedulers["G"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.5e-4)  # halves every lr_step steps
    batch = next(iter(task.data))
    assert batch["a"].shape == (2, 3, 32, 48) and batch["b"].shape == (2, 3, 32, 48)
    grid = task.samples({k: v[:2] for k, v in batch.items()})
    assert grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1
    assert grid.shape[1] == 4 * 32 + 5 * 2 and grid.shape[2] == 3 * 48 + 4 * 2  # rows: 2 per direction; 3 columns
    cfg["train"]["loss"]["style"] = 1.0
    with pytest.raises(S2RError, match="unknown UNIT loss terms"):
        build_task(create_model("unit", **SMALL), cfg, {"synthetic": MemoryDataset(2), "real": MemoryDataset(2)},
                                                DistInfo(), "cpu")


def test_load_state_dicts_prefers_ema():
    src = create_model("unit", **SMALL)
    ema = create_model("unit", **SMALL)
    with torch.no_grad():
        for p in ema.G.parameters():
            p.add_(0.5)
    states = {"G": src.G.state_dict(), "G_ema": ema.G.state_dict(), "D": src.D.state_dict()}
    net = create_model("unit", **SMALL)
    net.load_s2r_state_dicts(states, prefer_ema=True)
    x = _x()
    assert torch.allclose(net.translate(x), ema.eval().translate(x))
    net.load_s2r_state_dicts(states, prefer_ema=False)
    assert torch.allclose(net.translate(x), src.eval().translate(x))
    with pytest.raises(S2RError, match="no generator"):
        net.load_s2r_state_dicts({"D": src.D.state_dict()}, prefer_ema=True)


def test_layer_norm_normalises_each_sample():
    ln = LayerNorm2d(4)
    x = torch.randn(3, 4, 5, 6) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1, 1) + 7
    y = ln(x)
    assert torch.allclose(y.flatten(1).mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.flatten(1).std(1, unbiased=False), torch.ones(3), atol=1e-3)


def _task(preset: str = "tiny", **train):
    cfg = preset_defaults("unit", preset)
    cfg["data"].update(synthetic="mem", real="mem", size=[32, 48])
    cfg["train"].update(batch_size=2, **{k: v for k, v in train.items() if k != "loss"})
    cfg["train"]["loss"].update(train.get("loss", {}))
    torch.manual_seed(0)
    net = create_model("unit", **SMALL)
    return build_task(net, cfg, {"synthetic": MemoryDataset(3), "real": MemoryDataset(3, seed=1)}, DistInfo(), "cpu")


def test_vae_noise_zero_makes_the_generator_terms_deterministic():
    task = _task(vae_noise=0.0)
    batch = next(iter(task.data))
    first, second = task.loss("G", batch, 0), task.loss("G", batch, 0)
    assert torch.equal(first["recon_x"], second["recon_x"]) and torch.equal(first["cyc_x"], second["cyc_x"])
    noisy = _task(vae_noise=1.0)
    a, b = noisy.loss("G", batch, 0), noisy.loss("G", batch, 0)
    assert not torch.equal(a["recon_x"], b["recon_x"])  # the reduced VAE draws noise each time
    with pytest.raises(S2RError, match="vae_noise"):
        _task(vae_noise=-1.0)


def test_semantic_consistency_adds_a_segmenter_phase_and_term():
    task = _task(loss={"sem": 1.0})
    assert [p.name for p in task.phases] == ["S", "D", "G"] and "S" in task.nets
    batch = next(iter(task.data))
    assert "a_label" in batch
    s_terms = task.loss("S", batch, 0)
    assert set(s_terms) == {"loss", "ce_a", "ce_ab"} and s_terms["ce_a"] > 0
    g_terms = task.loss("G", batch, 0)
    assert "sem" in g_terms and g_terms["sem"] > 0
    # the term reaches the generator: its gradient is non-zero
    task.nets["G"].zero_grad()
    g_terms["sem"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.nets["G"].parameters())
    off = _task()
    assert "sem" not in off.loss("G", next(iter(off.data)), 0) and "S" not in off.nets


def test_cpu_preset_is_the_tiny_network_with_semantic_consistency():
    cpu, tiny = preset_defaults("unit", "cpu"), preset_defaults("unit", "tiny")
    assert cpu["data"]["size"] == [64, 128] and cpu["model_kwargs"] == tiny["model_kwargs"]
    assert cpu["train"]["loss"] == {**tiny["train"]["loss"], "sem": 3.0}
    assert 1000 <= cpu["train"]["steps"] <= 4000  # minutes, not hours, on a 2-core CPU
    task = _task("cpu")  # the preset builds a task whose generator is trained against the aux segmenter
    assert [p.name for p in task.phases] == ["S", "D", "G"]
    assert "sem" in task.loss("G", next(iter(task.data)), 0)


def test_residual_decoders_start_as_the_identity_and_learn_a_change():
    net = create_model("unit", **SMALL, skip=True).eval()
    x = _x() * 0.99  # (values past +-0.999 are clamped before atanh)
    for direction in ("a2b", "b2a"):  # zero last convolutions: tanh(atanh(x)) = x
        torch.testing.assert_close(net.translate(x, direction), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="source image"):
        net.G.decode(net.G.encode(x, "a"), "b")
    plain = create_model("unit", **SMALL)
    assert not torch.allclose(plain.translate(x), x, atol=0.1)  # the paper's decoder does not start there
    # the generator terms train the residual: the last convolution gets a gradient, and a step moves off x
    cfg = preset_defaults("unit", "tiny")
    cfg["data"].update(synthetic="mem", real="mem", size=[32, 48])
    cfg["train"]["batch_size"] = 2
    torch.manual_seed(0)
    net = create_model("unit", **SMALL, skip=True)
    task = build_task(net, cfg, {"synthetic": MemoryDataset(3), "real": MemoryDataset(3, seed=1)}, DistInfo(), "cpu")
    batch = next(iter(task.data))
    terms = task.loss("G", batch, 0)
    terms["loss"].backward()
    last = net.G.dec["b"][-1][0]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    task.optimizers["G"].step()
    assert not torch.allclose(net.eval().translate(batch["a"]), batch["a"], atol=1e-4)
