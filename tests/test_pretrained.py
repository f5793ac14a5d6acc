import pytest
import torch

from s2rcli import pretrained
from s2rcli.errors import S2RError
from s2rcli.losses.perceptual import VGGFeatures


def test_explicit_path_wins(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert pretrained.resolve_weights("vgg19", f) == f


def test_missing_explicit_path(tmp_path):
    with pytest.raises(S2RError) as err:
        pretrained.resolve_weights("vgg16", tmp_path / "nope.pth")
    assert "vgg16-397923af.pth" in err.value.one_line() or "download.pytorch.org" in err.value.one_line()


def test_cache_then_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    calls = []

    def fake_download(url, target):
        calls.append(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"w")

    monkeypatch.setattr(pretrained, "_download", fake_download)
    path = pretrained.resolve_weights("vgg19")
    assert path == tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth" and calls == [pretrained.WEIGHTS["vgg19"].url]
    assert pretrained.resolve_weights("vgg19") == path and len(calls) == 1  # cache hit, no second download


def test_offline_error_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, target):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(pretrained, "_download", offline)
    with pytest.raises(S2RError) as err:
        pretrained.resolve_weights("inception-fid")
    line = err.value.one_line()
    assert "\n" not in line
    assert "weights-inception-2015-12-05-6726825d.pth" in line
    assert str(tmp_path / "checkpoints") in line and "--inception-weights" in line


def test_random_is_explicit_and_warns(capsys):
    assert pretrained.resolve_weights("vgg16", "random") is None
    assert "not comparable" in capsys.readouterr().err


def test_vgg_features_random_and_local_file(tmp_path):
    feats = VGGFeatures("vgg16", layers=("relu1_2", "relu2_2"), weights="random")
    out = feats(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert [o.shape[1] for o in out] == [64, 128] and out[1].shape[-1] == 16
    assert not any(p.requires_grad for p in feats.parameters())
    # weights from a local file are loaded exactly
    from torchvision.models import vgg16

    ref = vgg16(weights=None)
    torch.save(ref.state_dict(), tmp_path / "vgg16.pth")
    feats = VGGFeatures("vgg16", layers=("relu1_1",), weights=str(tmp_path / "vgg16.pth"))
    assert torch.equal(feats.features[0].weight, ref.features[0].weight)
