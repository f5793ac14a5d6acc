"""FID/KID through torch-fidelity with a registered tiny extractor: the whole path,
batch-size independence, the feature cache, and the CLI's error paths."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.errors import S2RError
from s2rcli.metrics import fid as F

runner = CliRunner()


def _write_images(folder, n, kind, seed, size=(20, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        if kind == "noise":
            array = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        else:  # flat colours with a horizon: a different appearance
            array = np.empty((*size, 3), np.uint8)
            array[: size[0] // 2] = rng.integers(0, 256, 3)
            array[size[0] // 2:] = rng.integers(0, 256, 3)
        Image.fromarray(array).save(folder / f"img{i:02d}.png")
    return str(folder)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    return {
        "noise": _write_images(root / "noise", 8, "noise", 0),
        "noise2": _write_images(root / "noise2" / "images", 8, "noise", 1).rsplit("/images", 1)[0],
        "flat": _write_images(root / "flat", 8, "flat", 2),
    }


@pytest.fixture(scope="module")
def tiny_extractor():
    """A small randomly initialised extractor registered through torch-fidelity's registry."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class Tiny(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            gen = torch.Generator().manual_seed(7)
            self.conv = torch.nn.Conv2d(3, 12, 3, stride=2)
            with torch.no_grad():
                self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.3)
                self.conv.bias.zero_()

        @staticmethod
        def get_provided_features_list():
            return ("24",)

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3
            y = torch.relu(self.conv(x.float() / 127.5 - 1))
            return (torch.cat([y.mean((2, 3)), y.amax((2, 3))], 1),)

    if "test-tiny" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("test-tiny", Tiny)
    return F.registered_extractor("test-tiny", "24")


def test_resize_protocol(sets):
    images = F.open_images(sets["noise"])
    tensor = F.load_resized(images, 0, (16, 48))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 16, 48)
    expected = np.array(Image.open(images.samples[0].image).convert("RGB").resize((48, 16), Image.BICUBIC))
    assert torch.equal(tensor, torch.from_numpy(expected).permute(2, 0, 1))
    assert F.parse_size("256x512") == (256, 512)
    with pytest.raises(S2RError, match="bad size"):
        F.parse_size("256by512")


def test_whole_path_with_registered_extractor(sets, tiny_extractor):
    result = F.compare(sets["noise"], [("noise2", sets["noise2"]), ("flat", sets["flat"]), ("self", sets["noise"])],
                       extractor=tiny_extractor, kid=True, size=(16, 32), batch_size=3)
    by = {r["reference"]: r for r in result["results"]}
    assert abs(by["self"]["fid"]) < 1e-6
    assert by["self"]["kid_mean"] <= 0     # the unbiased estimator on identical sets ("slightly less than 0")
    # two noise sets are closer to each other than noise is to flat colours
    assert 0 < by["noise2"]["fid"] < by["flat"]["fid"]
    assert by["noise2"]["kid_mean"] < by["flat"]["kid_mean"]
    assert by["flat"]["kid_subset_size"] == 8 and by["flat"]["count"] == 8
    assert result["protocol"]["size"] == [16, 32] and result["protocol"]["extractor"] == "test-tiny"
    # the numbers are torch-fidelity's formulas on these features
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    f1 = F.compute_features(F.open_images(sets["noise"]), tiny_extractor, size=(16, 32), batch_size=8)
    f2 = F.compute_features(F.open_images(sets["flat"]), tiny_extractor, size=(16, 32), batch_size=8)
    assert f1.shape == (8, 24) and f1.std() > 1e-3                # real features, not ~1e-8
    ref = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(f1)),
                                   fid_features_to_statistics(torch.from_numpy(f2)), False)
    assert by["flat"]["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)


def test_batch_size_independent_and_reproducible(sets, tiny_extractor):
    one = F.compare(sets["noise"], [("flat", sets["flat"])], extractor=tiny_extractor, kid=True, size=(16, 32),
                    batch_size=1)["results"][0]
    many = F.compare(sets["noise"], [("flat", sets["flat"])], extractor=tiny_extractor, kid=True, size=(16, 32),
                     batch_size=5)["results"][0]
    assert one["fid"] == pytest.approx(many["fid"], rel=1e-5)
    assert one["kid_mean"] == pytest.approx(many["kid_mean"], rel=1e-5)
    again = F.compare(sets["noise"], [("flat", sets["flat"])], extractor=tiny_extractor, kid=True, size=(16, 32),
                      batch_size=5)["results"][0]
    assert again == many


def test_cache_hit_and_invalidation(tmp_path, tiny_extractor, monkeypatch):
    folder = tmp_path / "set"
    _write_images(folder, 5, "noise", 3)
    cache = tmp_path / "cache"
    images = F.open_images(str(folder))
    first = F.compute_features(images, tiny_extractor, size=(16, 32), cache_dir=cache)
    entries = list(cache.glob("*.npz"))
    assert len(entries) == 1

    def no_extractor(*args, **kwargs):
        raise AssertionError("the extractor was built although the features are cached")

    with monkeypatch.context() as m:
        m.setattr(F.Extractor, "create", no_extractor)
        np.testing.assert_array_equal(F.compute_features(F.open_images(str(folder)), tiny_extractor, size=(16, 32),
                                                         cache_dir=cache), first)
    # another size or another extractor setting is another entry
    F.compute_features(images, tiny_extractor, size=(16, 16), cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    # change one file: the entry for (folder, 16x32) is recomputed and replaced
    target = folder / "img00.png"
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(target)
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = F.compute_features(F.open_images(str(folder)), tiny_extractor, size=(16, 32), cache_dir=cache)
    assert not np.array_equal(changed[0], first[0])
    np.testing.assert_allclose(changed[1:], first[1:], rtol=1e-6)
    assert len(list(cache.glob("*.npz"))) == 2 and not entries[0].exists()


def test_inception_weights_are_loaded_from_the_given_file(sets, tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as Inception

    with monkeypatch.context() as m:  # build one without any weights, to write a weight file of the right layout
        m.setattr(Inception, "load_state_dict", lambda self, *a, **k: None)
        m.setattr(torch, "load", lambda *a, **k: {})
        blank = Inception("inception-v3-compat", ["2048"], feature_extractor_weights_path="none")
    state = blank.state_dict()
    state["Conv2d_1a_3x3.conv.weight"].fill_(0.01)
    torch.save(state, tmp_path / "inception.pth")

    extractor = F.resolve_extractor(str(tmp_path / "inception.pth"))
    assert extractor.name == "inception-v3-compat" and extractor.layer == "2048" and extractor.comparable
    net = extractor.create(torch.device("cpu"))
    assert torch.all(net.Conv2d_1a_3x3.conv.weight == 0.01)      # the file's weights, not a download
    features = F.compute_features(F.open_images(sets["flat"]), extractor, size=(16, 32), batch_size=4, net=net)
    assert features.shape == (8, 2048) and np.isfinite(features).all()


def test_cli_random_features_json_is_clean(sets, tmp_path):
    result = runner.invoke(app, ["-q", "fid", sets["noise"], "--real", sets["flat"], "--synthetic", sets["noise2"],
                                 "--kid", "--size", "16x32", "--inception-weights", "random",
                                 "--cache-dir", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)                          # stdout holds only the JSON
    assert [r["reference"] for r in payload["results"]] == ["real", "synthetic"]
    assert payload["protocol"]["label"] == "random features; not comparable to papers"
    assert payload["protocol"]["comparable_to_papers"] is False
    real, synthetic = payload["results"]
    assert synthetic["fid"] < real["fid"]                        # noise is nearer noise than flat colours
    table = runner.invoke(app, ["fid", sets["noise"], sets["flat"], "--size", "16x32", "--inception-weights", "random",
                                "--cache-dir", str(tmp_path / "c")])
    assert table.exit_code == 0 and "random features; not comparable to papers" in table.stdout


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    return lines[0]


def test_cli_missing_folder(tmp_path, sets):
    result = runner.invoke(app, ["fid", str(tmp_path / "nope"), sets["flat"], "--inception-weights", "random"])
    assert result.exit_code == 1
    assert "no such folder" in _one_error_line(result)


def test_cli_no_reference(sets):
    result = runner.invoke(app, ["fid", sets["flat"]])
    assert result.exit_code == 1 and "nothing to compare against" in _one_error_line(result)


def test_cli_missing_inception_weights_offline(tmp_path, sets, monkeypatch):
    import s2rcli.pretrained as pretrained

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, target):
        raise OSError("network is unreachable")

    monkeypatch.setattr(pretrained, "_download", offline)
    result = runner.invoke(app, ["fid", sets["noise"], sets["flat"]])
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "weights-inception-2015-12-05-6726825d.pth" in line and "--inception-weights" in line
    missing = runner.invoke(app, ["fid", sets["noise"], sets["flat"], "--inception-weights", str(tmp_path / "x.pth")])
    assert missing.exit_code == 1 and "no such file" in _one_error_line(missing)


def test_cli_wrong_folder_is_reported_before_missing_weights(tmp_path, sets, monkeypatch):
    """Offline and with a typo in a path, the user hears about the path first."""
    import s2rcli.pretrained as pretrained

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    downloads = []
    monkeypatch.setattr(pretrained, "_download", lambda url, target: downloads.append(url) or (_ for _ in ()).throw(OSError("offline")))
    result = runner.invoke(app, ["fid", sets["noise"], "--real", str(tmp_path / "typo")])
    assert result.exit_code == 1
    assert "no such folder" in _one_error_line(result) and downloads == []
