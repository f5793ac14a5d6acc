import os
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from s2rcli.errors import S2RError
from s2rcli import checkpoint as ck


def _ckpt(step=3, **kw):
    net = torch.nn.Linear(3, 2)
    return ck.make_checkpoint(model="toy", model_kwargs={"width": 3}, state_dicts={"G": net.state_dict()},
                              step=step, rng=ck.capture_rng_state(), config={"lr": 1e-4}, **kw), net


def test_round_trip(tmp_path):
    ckpt, net = _ckpt(sampler={"kind": "RandomPairSampler", "position": 7})
    path = ck.save_checkpoint(ckpt, tmp_path / "a.pt")
    loaded = ck.load_checkpoint(path)
    assert loaded["format"] == ck.FORMAT and loaded["format_version"] == ck.FORMAT_VERSION
    assert loaded["step"] == 3 and loaded["model_kwargs"] == {"width": 3}
    assert loaded["sampler"]["position"] == 7 and loaded["config"] == {"lr": 1e-4}
    for key, value in net.state_dict().items():
        assert torch.equal(loaded["state_dicts"]["G"][key], value)


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt, _ = _ckpt()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.save_checkpoint(ckpt, tmp_path / "r.pt")
    random.seed(9), np.random.seed(9), torch.manual_seed(9)  # scramble
    ck.restore_rng_state(ck.load_checkpoint(tmp_path / "r.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_refuses_overwrite(tmp_path):
    ckpt, _ = _ckpt()
    ck.save_checkpoint(ckpt, tmp_path / "a.pt")
    with pytest.raises(S2RError, match="already exists"):
        ck.save_checkpoint(ckpt, tmp_path / "a.pt")
    ck.save_checkpoint(ckpt, tmp_path / "a.pt", overwrite=True)


def test_upgrade_hook_from_v0(tmp_path):
    net = torch.nn.Linear(2, 2)
    old = {"format": ck.FORMAT, "format_version": 0, "model": "toy", "model_kwargs": {}, "nets": {"G": net.state_dict()}, "step": 5}
    torch.save(old, tmp_path / "old.pt")
    loaded = ck.load_checkpoint(tmp_path / "old.pt")
    assert loaded["format_version"] == ck.FORMAT_VERSION
    assert "nets" not in loaded and torch.equal(loaded["state_dicts"]["G"]["weight"], net.weight)
    assert loaded["optimizers"] == {} and loaded["rng"] == {}


def test_newer_version_refused(tmp_path):
    torch.save({"format": ck.FORMAT, "format_version": 99}, tmp_path / "new.pt")
    with pytest.raises(S2RError, match="newer than this s2r"):
        ck.load_checkpoint(tmp_path / "new.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": ck.FORMAT, "payload": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(S2RError, match="refusing to load"):
        ck.load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    # a raw pickle (not even a torch zip file) is refused too
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(S2RError):
        ck.load_checkpoint(tmp_path / "raw.pt")
    assert not (tmp_path / "PWNED").exists()


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(S2RError, match="is not an s2r checkpoint"):
        ck.load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(S2RError, match="is not an s2r checkpoint \\(not a PyTorch file\\)"):
        ck.load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes(ck.save_checkpoint(_ckpt()[0], tmp_path / "whole.pt").read_bytes()[:200])
    with pytest.raises(S2RError, match="cannot read checkpoint"):  # a truncated torch file
        ck.load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(S2RError, match="not found"):
        ck.load_checkpoint(tmp_path / "missing.pt")


def test_clean_state_dict():
    sd = {"module.enc.weight": 1, "_orig_mod.dec.bias": 2, "module._orig_mod.x": 3, "a._orig_mod.b": 4, "modules.k": 5}
    assert ck.clean_state_dict(sd) == {"enc.weight": 1, "dec.bias": 2, "x": 3, "a.b": 4, "modules.k": 5}


def test_atomic_write_survives_crash(tmp_path):
    """Kill the writer between the temp write and the rename: the old file stays intact."""
    ckpt, _ = _ckpt(step=1)
    target = tmp_path / "latest.pt"
    ck.save_checkpoint(ckpt, target)
    before = target.read_bytes()
    script = textwrap.dedent(f"""
        import os, torch
        from s2rcli import checkpoint as ck
        from s2rcli.utils import atomic
        def crash(src, dst):
            os._exit(9)          # the process dies right before the rename
        atomic.os.replace = crash
        net = torch.nn.Linear(3, 2)
        c = ck.make_checkpoint(model="toy", model_kwargs={{}}, state_dicts={{"G": net.state_dict()}}, step=2)
        ck.save_checkpoint(c, {str(target)!r}, overwrite=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    assert target.read_bytes() == before
    assert ck.load_checkpoint(target)["step"] == 1


def test_atomic_files_get_normal_permissions(tmp_path):
    from s2rcli.utils.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644
