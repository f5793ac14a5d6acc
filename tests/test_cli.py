"""Every CLI error path: exit code 1 (2 for not-yet-built), one line, no traceback."""

import torch
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli import checkpoint as ck

runner = CliRunner()


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    for command in ("prepare", "train", "translate", "segment-eval", "fid", "models"):
        assert command in result.output
    assert runner.invoke(app, ["--version"]).output.startswith("s2r ")


def test_every_command_help_has_example():
    commands = [["prepare", "remap"], ["prepare", "demo"], ["prepare", "spfeat"], ["prepare", "pairs"], ["train"],
                ["translate"], ["segment-eval", "score"], ["segment-eval", "train-and-test"], ["fid"], ["models"]]
    for cmd in commands:
        result = runner.invoke(app, cmd + ["--help"])
        assert result.exit_code == 0, (cmd, result.output)
        assert "Example:" in result.output, cmd


def test_models_table():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "s2r models" in result.output


def test_wrong_model_name():
    result = runner.invoke(app, ["models", "no-such-model"])
    assert result.exit_code == 1
    assert "unknown model 'no-such-model'" in _one_error_line(result)


def test_missing_checkpoint_path(tmp_path):
    result = runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "missing.pt")])
    assert result.exit_code == 1
    assert "checkpoint not found" in _one_error_line(result)


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["models", "--checkpoint", str(bad)])
    assert result.exit_code == 1
    assert "bad.pt" in _one_error_line(result)


def test_non_s2r_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    result = runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "other.pt")])
    assert result.exit_code == 1
    assert "is not an s2r checkpoint" in _one_error_line(result)


def test_describe_checkpoint(tmp_path):
    net = torch.nn.Linear(2, 2)
    ck.save_checkpoint(ck.make_checkpoint(model="toy", model_kwargs={"w": 2}, state_dicts={"G": net.state_dict()}, step=4),
                       tmp_path / "c.pt")
    result = runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "c.pt")])
    assert result.exit_code == 0 and '"step": 4' in result.output and '"G"' in result.output


def test_verbose_shows_traceback(tmp_path):
    result = runner.invoke(app, ["--verbose", "models", "--checkpoint", str(tmp_path / "missing.pt")])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_bad_device():
    from s2rcli.device import resolve_device
    from s2rcli.errors import S2RError
    import pytest

    with pytest.raises(S2RError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"


def test_size_option_parser():
    import pytest

    from s2rcli.errors import S2RError
    from s2rcli.utils.sizes import parse_size

    assert parse_size("37x101") == (37, 101) and parse_size(" 64X128 ") == (64, 128)
    assert parse_size("256,512") == (256, 512) and parse_size([8, 16]) == (8, 16)
    assert parse_size(None) is None and parse_size("", default=(1, 2)) == (1, 2)
    for bad in ("12", "0x5", "axb", "1x2x3", [3]):
        with pytest.raises(S2RError, match="bad size"):
            parse_size(bad)
