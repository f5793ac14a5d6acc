"""`s2r translate`: odd sizes, tiles, label-to-image models, mirrored names, refusals."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data.torchdata import image_to_tensor, tensor_to_image
from s2rcli.inference import pad_to_multiple, run_padded, run_tiled, translate_dataset
from s2rcli.models import create_model, registry
from s2rcli.checkpoint import make_checkpoint, save_checkpoint

from toy_task import write_folder_world, one_torch_thread  # noqa: F401 (autouse fixture)

runner = CliRunner()
SMALL = dict(channels=8, n_down=2, n_res=2, n_shared=1, d_channels=8, d_layers=2, d_scales=2)


class LocalConv(nn.Module):
    """An image model with a 5x5 receptive field and stride 4, so tiles can match the whole image."""

    input_kind = "image"
    stride = 4

    def __init__(self, width: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.G = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def translate(self, x, direction="a2b"):
        return self.G(x) if direction == "a2b" else -self.G(x)

    def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
        self.G.load_state_dict(state_dicts["G_ema" if prefer_ema and "G_ema" in state_dicts else "G"])


class NoisyLabelModel(nn.Module):
    """A label-to-image model: embedding of the label plus generator-seeded noise."""

    input_kind = "label"
    stride = 4
    num_classes = 19
    label_space = "cityscapes19"

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(self.num_classes + 1, 3)

    def generate(self, labels, generator=None):
        assert labels.shape[-2] % self.stride == 0 and labels.shape[-1] % self.stride == 0
        labels = torch.where(labels == 255, self.num_classes, labels)
        noise = torch.randn(labels.shape[0], 3, 1, 1, generator=generator, device=labels.device)
        return torch.tanh(self.embed(labels).permute(0, 3, 1, 2) + 0.5 * noise)

    def load_s2r_state_dicts(self, state_dicts, prefer_ema=True):
        self.load_state_dict(state_dicts["G"])


@pytest.fixture(scope="module")
def fakes():
    presets = {"tiny": {"model": {}}, "paper": {"model": {}}}
    registry.register_model("test-local-conv", kind="translation", input_kind="image", presets=presets)(LocalConv)
    registry.register_model("test-noisy-label", kind="translation", input_kind="label", presets=presets)(NoisyLabelModel)
    yield
    registry.unregister_model("test-local-conv")
    registry.unregister_model("test-noisy-label")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    specs = write_folder_world(root, n=3, size=(37, 101))
    # a nested name, mirrored under OUT/images/city/...
    syn = root / "synthetic"
    (syn / "images" / "city").mkdir()
    (syn / "labels" / "city").mkdir()
    shutil.copy(syn / "images" / "syn_000.png", syn / "images" / "city" / "odd.png")
    Image.fromarray(np.asarray(Image.open(syn / "labels" / "syn_000.png"))[:, :]).save(syn / "labels" / "city" / "odd.png")
    return root, specs


def _save(tmp_path, name, model, label_space="cityscapes19", ema=None):
    sd = {"G": model.G.state_dict() if hasattr(model, "G") else model.state_dict()}
    if ema is not None:
        sd["G_ema"] = ema
    path = tmp_path / f"{name}.pt"
    save_checkpoint(make_checkpoint(model=name, model_kwargs={} if name.startswith("test-") else SMALL,
                                    state_dicts=sd, label_space=label_space, step=7), path)
    return path


def _png(path):
    return np.asarray(Image.open(path))


def test_padding_helpers():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    padded, (h, w) = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (8, 8) and (h, w) == (5, 7)
    assert torch.equal(padded[..., :5, :7], x) and torch.equal(padded[..., 5, :7], x[..., 3, :])  # reflected
    tiny = torch.rand(1, 3, 2, 2)
    assert pad_to_multiple(tiny, 4)[0].shape[-2:] == (4, 4)  # too small to reflect: replicate
    assert torch.equal(run_padded(lambda t: t * 2, x, 4), x * 2)


def test_unit_round_trip_at_odd_size_mirrors_names_and_labels(world, tmp_path):
    root, specs = world
    net = create_model("unit", **SMALL).eval()
    ema = create_model("unit", **SMALL).G.state_dict()
    ckpt = _save(tmp_path, "unit", net, ema=ema)
    out = tmp_path / "out"
    result = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", specs["synthetic"],
                                 "--output", str(out), "--tile", "0"])
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    assert names == ["city/odd.png", "syn_000.png", "syn_001.png", "syn_002.png"]
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png")) == names
    src = _png(root / "synthetic" / "images" / "syn_001.png")
    got = _png(out / "images" / "syn_001.png")
    assert got.shape == src.shape == (37, 101, 3)
    # EMA weights by default: the output is the EMA generator's translation, padded and cropped back
    ema_net = create_model("unit", **SMALL)
    ema_net.G.load_state_dict(ema)
    with torch.no_grad():
        expected = tensor_to_image(run_padded(lambda t: ema_net.eval().translate(t), image_to_tensor(src)[None], 4)[0])
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal(_png(out / "labels" / "syn_001.png"), _png(root / "synthetic" / "labels" / "syn_001.png"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 4 and manifest["direction"] == "a2b" and manifest["ema"] is True
    assert manifest["space"] == "cityscapes19" and manifest["step"] == 7

    # existing outputs are kept unless asked
    again = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", specs["synthetic"], "--output", str(out)])
    lines = [line for line in again.output.splitlines() if line.strip()]
    assert again.exit_code == 1 and len(lines) == 1 and "already exist" in lines[0]
    skip = translate_dataset(ckpt, specs["synthetic"], out, skip_existing=True)
    assert skip["images"] == 0 and skip["skipped"] == 4
    raw = translate_dataset(ckpt, specs["synthetic"], out, overwrite=True, use_ema=False, size=(24, 40), batch_size=2)
    assert raw["ema"] is False and raw["images"] == 4
    assert _png(out / "images" / "syn_001.png").shape == (24, 40, 3)
    assert _png(out / "labels" / "syn_001.png").shape == (24, 40)


def test_tiled_matches_untiled_away_from_seams(fakes):
    model = LocalConv().eval()
    x = torch.rand(1, 3, 70, 101) * 2 - 1
    fn = lambda t: model.translate(t)  # noqa: E731
    with torch.no_grad():
        whole = run_padded(fn, x, 4)
        tiled = run_tiled(fn, x, 4, tile=32, overlap=8)
    assert tiled.shape == whole.shape == x.shape
    # padded to 72x104; tile starts: rows 0, 24, 40 (= 72 - 32), cols 0, 24, 48, 72 (= 104 - 32)
    interior = torch.ones(70, 101, dtype=torch.bool)
    for edge in (24, 32, 40, 48, 56, 72, 80, 104):
        interior[max(0, edge - 3):edge + 3, :] = False
        interior[:, max(0, edge - 3):edge + 3] = False
    diff = (tiled - whole).abs()[0].amax(0)
    assert interior.sum() > 1000
    assert diff[interior].max() < 1e-5
    assert diff.max() < 0.1  # at the seams the blend still stays close


def test_tiled_cli_output(world, fakes, tmp_path):
    root, specs = world
    ckpt = _save(tmp_path, "test-local-conv", LocalConv())
    for tile in ("0", "32"):
        result = runner.invoke(app, ["translate", "--checkpoint", str(ckpt), "--input", specs["real"],
                                     "--output", str(tmp_path / f"t{tile}"), "--tile", tile, "--direction", "b2a"])
        assert result.exit_code == 0, result.output
    a, b = _png(tmp_path / "t0/images/rea_000.png"), _png(tmp_path / "t32/images/rea_000.png")
    assert a.shape == b.shape == (37, 101, 3)
    # padded to 40x104: tiles at rows 0 and 8, cols 0, 24, 48, 72; this window is 3+ px from every tile edge
    assert np.abs(a.astype(int) - b.astype(int))[12:28, 36:45].max() <= 1
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2


def test_label_model_samples_are_seeded_and_labels_carried(world, fakes, tmp_path):
    root, specs = world
    ckpt = _save(tmp_path, "test-noisy-label", NoisyLabelModel())
    out = tmp_path / "gen"
    args = ["translate", "--checkpoint", str(ckpt), "--input", specs["synthetic"], "--output", str(out), "--samples", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    s0, s1 = _png(out / "images" / "syn_000_s00.png"), _png(out / "images" / "syn_000_s01.png")
    assert s0.shape == (37, 101, 3) and not np.array_equal(s0, s1)
    assert (out / "labels" / "city" / "odd_s00.png").exists() and (out / "labels" / "city" / "odd_s01.png").exists()
    from s2rcli.data.datasets import open_dataset

    generated = open_dataset(f"folder:{out}")  # every sample is paired with its label: ready for segmentation training
    assert generated.has_labels and len(generated) == 8
    assert np.array_equal(generated.read_label(generated.names.index("city/odd_s01")), _png(out / "labels/city/odd_s00.png"))
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    assert np.array_equal(_png(out / "images" / "syn_000_s00.png"), s0)  # same (seed, index, sample), same image
    other = translate_dataset(ckpt, specs["synthetic"], tmp_path / "seed1", samples=2, seed=1)
    assert other["images"] == 8 and not np.array_equal(_png(tmp_path / "seed1/images/syn_000_s00.png"), s0)

    # a bare folder of label PNGs works too (its top level only); one sample keeps the plain name
    bare = tmp_path / "bare_labels"
    shutil.copytree(root / "synthetic" / "labels", bare)
    single = translate_dataset(ckpt, str(bare), tmp_path / "bare_out")
    assert single["images"] == 3 and (tmp_path / "bare_out/images/syn_000.png").exists()


def test_wrong_input_kind_is_refused(world, fakes, tmp_path):
    root, specs = world
    label_ckpt = _save(tmp_path, "test-noisy-label", NoisyLabelModel())
    images_only = tmp_path / "images_only"
    shutil.copytree(root / "real" / "images", images_only)
    result = runner.invoke(app, ["translate", "--checkpoint", str(label_ckpt), "--input", str(images_only),
                                 "--output", str(tmp_path / "x")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "no label maps" in lines[0]

    image_ckpt = _save(tmp_path, "test-local-conv", LocalConv())
    result = runner.invoke(app, ["translate", "--checkpoint", str(image_ckpt), "--input",
                                 str(root / "synthetic" / "labels"), "--output", str(tmp_path / "y")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "holds label maps" in lines[0]
    result = runner.invoke(app, ["translate", "--checkpoint", str(image_ckpt), "--input", specs["real"],
                                 "--output", str(tmp_path / "z"), "--samples", "3"])
    assert result.exit_code == 1 and "--samples" in result.output
