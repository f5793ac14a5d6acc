"""Weight files are data, never code: a pickle that would run code is refused on
every path that reads weights (explicit path, hub cache, inside torch-fidelity)."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s2rcli import pretrained
from s2rcli.cli.app import app
from s2rcli.errors import S2RError
from s2rcli.metrics import fid as F

runner = CliRunner()


class _Payload:
    """Unpickling this touches ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_file(path: Path, marker: Path) -> Path:
    torch.save({"conv.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    return _evil_file(tmp_path / "evil.pth", marker), marker


def _images(folder: Path, n: int = 3) -> str:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((16, 32, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def test_the_payload_really_runs_without_protection(evil):
    """The fixture is a real attack: an unsafe load executes it."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_safe_load_refuses_code(evil):
    path, marker = evil
    with pytest.raises(S2RError, match="does not run code"):
        pretrained.safe_load_weights("vgg16", path)
    assert not marker.exists()


def test_forced_weights_only_block_protects_third_party_loads(evil):
    path, marker = evil
    with pretrained.weights_only_loads():
        with pytest.raises(Exception):
            torch.load(path, weights_only=False)  # what torch-fidelity 0.4 does
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in __import__("os").environ


def test_fid_inception_weights_file_is_not_executed(evil, tmp_path):
    path, marker = evil
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b")
    result = runner.invoke(app, ["fid", a, "--real", b, "--inception-weights", str(path)])
    assert result.exit_code == 1
    assert "does not run code" in result.output and str(path) in result.output
    assert "Traceback" not in result.output
    assert not marker.exists()


def test_fid_planted_hub_cache_file_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    marker = tmp_path / "code_ran"
    cached = pretrained.cache_dir() / pretrained.WEIGHTS["inception-fid"].filename
    cached.parent.mkdir(parents=True)
    _evil_file(cached, marker)
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b")
    result = runner.invoke(app, ["fid", a, "--real", b])
    assert result.exit_code == 1 and "does not run code" in result.output
    assert not marker.exists()


def test_extractor_create_never_runs_code_even_past_the_check(evil, monkeypatch):
    """Even if the pre-check were skipped, the library's own load is forced weights-only."""
    path, marker = evil
    monkeypatch.setattr(F, "safe_load_weights", lambda *a, **k: {})
    extractor = F.Extractor(F.INCEPTION, "2048", str(path), "x", "Inception", True)
    with pytest.raises(S2RError):
        extractor.create(torch.device("cpu"))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_other_weights_refuse_code(evil, name):
    path, marker = evil
    with pytest.raises(S2RError, match="does not run code"):
        pretrained.load_state_dict(name, str(path))
    assert not marker.exists()


def test_plain_state_dict_loads(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(pretrained.safe_load_weights("vgg16", path)["w"], torch.ones(2))
