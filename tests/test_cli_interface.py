"""The CLI surface: whole one-line errors for what users cause, nested folders for `s2r fid`,
metavars in --help, the models table at 80 columns, and a valid example in every --help."""

from __future__ import annotations

import errno
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from s2rcli import checkpoint as ck
from s2rcli.cli import models as cli_models
from s2rcli.cli.app import app
from s2rcli.errors import S2RError, first_sentence, from_exception

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def _fail_checkpoint_with(monkeypatch, exc: BaseException) -> None:
    """`s2r models --checkpoint X` reads X through checkpoint.load_checkpoint: make that raise ``exc``."""
    def load(path, *args, **kwargs):
        raise exc

    monkeypatch.setattr(ck, "load_checkpoint", load)
    monkeypatch.setattr(cli_models, "load_checkpoint", load)  # the command's own reference to it


# --- item 12: whole one-line messages for errors a user causes ----------------------------------


def test_permission_error_names_the_option_and_says_what_to_do(tmp_path, monkeypatch):
    path = str(tmp_path / "run.pt")
    _fail_checkpoint_with(monkeypatch, PermissionError(errno.EACCES, "Permission denied", path))
    result = runner.invoke(app, ["models", "--checkpoint", path])
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "unexpected" not in line
    assert f"--checkpoint {path}: Permission denied" in line and "check the permissions" in line


def test_oserror_inside_an_output_folder_names_that_folder(tmp_path):
    inner = str(tmp_path / "out" / ".config.json.ab12cd_x.tmp")  # an atomic write's temp file
    error = from_exception(OSError(errno.ENOSPC, "No space left on device", inner), {"--out": str(tmp_path / "out")})
    assert error is not None
    assert error.message == f"{tmp_path / 'out' / 'config.json'}: No space left on device (inside --out {tmp_path / 'out'})"
    assert "free some disk space" in error.hint
    is_a_dir = from_exception(IsADirectoryError(errno.EISDIR, "Is a directory", "runs/a"), {"--config": "runs/a"})
    assert is_a_dir.message == "--config runs/a: Is a directory" and "pass a file" in is_a_dir.hint


def test_memory_errors_are_one_line_with_advice(tmp_path, monkeypatch):
    _fail_checkpoint_with(monkeypatch, MemoryError())
    line = _one_error_line(runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "a.pt")]))
    assert "out of memory" in line and "--batch-size" in line and "unexpected" not in line
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                                      "of 79.19 GiB of which 1.2 GiB is free. Including non-PyTorch memory, ...")
    _fail_checkpoint_with(monkeypatch, oom)
    result = runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "a.pt")])
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "out of GPU memory: Tried to allocate 2.00 GiB Hint:" in line and "--device cpu" in line


def test_bad_option_value_names_the_option(tmp_path, monkeypatch):
    _fail_checkpoint_with(monkeypatch, ValueError("could not convert string to float: 'abc'"))
    result = runner.invoke(app, ["models", "--checkpoint", "abc"])
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "bad value in --checkpoint abc: could not convert string to float: 'abc'" in line
    assert "s2r models --help" in line or "models --help" in line
    error = from_exception(ValueError("could not convert string to float: 'abc'"),
                           {"--set": ["train.steps=3", "train.lr=abc"]}, "s2r train")
    assert error.message.startswith("bad value in --set train.lr=abc")


def test_ctrl_c_is_one_line_exit_130(tmp_path, monkeypatch):
    _fail_checkpoint_with(monkeypatch, KeyboardInterrupt())
    result = runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "a.pt")])
    assert result.exit_code == 130
    assert "interrupted (Ctrl-C)" in _one_error_line(result)


def test_unforeseen_errors_are_not_cut(tmp_path, monkeypatch):
    text = "first part " * 40 + "and the end"
    _fail_checkpoint_with(monkeypatch, TypeError(text))
    line = _one_error_line(runner.invoke(app, ["models", "--checkpoint", str(tmp_path / "a.pt")]))
    assert "and the end" in line and "--verbose" in line


def test_verbose_keeps_the_traceback_of_a_converted_error(tmp_path, monkeypatch):
    _fail_checkpoint_with(monkeypatch, PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "a.pt")))
    result = runner.invoke(app, ["--verbose", "models", "--checkpoint", str(tmp_path / "a.pt")])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "PermissionError" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: --checkpoint")


def test_checkpoint_read_errors_keep_whole_sentences(tmp_path, monkeypatch):
    (tmp_path / "c.pt").write_bytes(b"PK\x03\x04 whatever")
    sentence = "PytorchStreamReader failed reading zip archive: " + "failed finding central directory " * 6 + "here."

    def broken(*args, **kwargs):
        raise RuntimeError(f"{sentence} This is an internal error. If you are seeing this, the file is corrupted.")

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(S2RError) as info:
        ck.load_checkpoint(tmp_path / "c.pt")
    assert info.value.message == f"cannot read checkpoint {tmp_path / 'c.pt'}: {sentence}"


def test_refused_pickle_says_what_was_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"format": ck.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(S2RError) as info:
        ck.load_checkpoint(tmp_path / "evil.pt")
    message = info.value.message
    assert "refusing to load" in message and "getcwd" in message and "GLOBAL" in message
    assert message.endswith(")")  # the reason is closed, not cut off


def test_first_sentence_never_cuts_inside_a_sentence():
    assert first_sentence("One thing failed. Then\nmore advice.") == "One thing failed."
    assert first_sentence("e.g. a value of 1.5 is bad") == "e.g. a value of 1.5 is bad"


def test_error_is_one_line_on_an_80_column_terminal(tmp_path):
    """A real OSError (the output's parent is a file), in a real process on an 80-column terminal."""
    blocker = tmp_path / ("a-file-where-a-folder-should-be-" * 2)
    blocker.write_text("x")
    env = dict(os.environ, COLUMNS="80", LINES="24", NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "s2rcli", "prepare", "demo", "--out", str(blocker / "demo"), "--n-synthetic", "1",
         "--n-real", "1", "--n-real-val", "0"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error:") and len(line) > 80
    assert "unexpected" not in line and str(blocker) in line


# --- item 14: `s2r fid` on plain nested folders ------------------------------------------------


def _write(folder: Path, names: list[str], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(folder / name)


@pytest.fixture()
def cityscapes_like(tmp_path):
    """leftImg8bit/val/<city>/*.png, with the same file names in different cities."""
    val = tmp_path / "leftImg8bit" / "val"
    for i, city in enumerate(("frankfurt", "lindau", "munster")):
        _write(val / city, ["img00.png", "img01.png"], seed=i)
    _write(val / "lindau" / "extra", ["deep.jpg"], seed=7)
    _write(val / "frankfurt", ["img00.jpg"], seed=8)  # same stem, another suffix
    return val


def test_fid_reads_a_nested_folder_recursively(cityscapes_like):
    from s2rcli.metrics.fid import open_image_set, open_images

    dataset = open_images(str(cityscapes_like))
    names = [s.name for s in dataset.samples]
    assert len(dataset) == 8 and len(set(names)) == 8
    assert "lindau/img00" in names and "munster/img01" in names and "lindau/extra/deep" in names
    assert {"frankfurt/img00.png", "frankfurt/img00.jpg"} <= set(names)
    assert len(open_image_set(f"folder:{cityscapes_like}")) == 8


def test_fid_nested_folder_leaves_out_labels(tmp_path):
    from s2rcli.metrics.fid import open_images

    _write(tmp_path / "set" / "a", ["x.png"], 0)
    _write(tmp_path / "set" / "labels", ["x.png"], 1)
    assert [s.name for s in open_images(str(tmp_path / "set")).samples] == ["a/x"]


def test_fid_cli_on_a_nested_folder(cityscapes_like, tmp_path):
    import json

    ref = tmp_path / "ref"
    _write(ref, [f"r{i}.png" for i in range(4)], seed=3)
    result = runner.invoke(app, ["fid", str(cityscapes_like), str(ref), "--inception-weights", "random", "--json",
                                 "--no-cache", "--size", "16x32"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert data["input"]["count"] == 8 and data["results"][0]["count"] == 4


# --- help: commands, metavars and examples -----------------------------------------------------


def _tree():
    """(words, click command) for the root and every command and group under it."""
    found = []

    def walk(command, words):
        found.append((words, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, words + [name])

    walk(typer.main.get_command(app), [])
    return found


def _help(words: list[str]) -> str:
    result = runner.invoke(app, words + ["--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, (words, result.output)
    return result.output


def test_every_command_is_walked():
    names = {" ".join(words) for words, _ in _tree()}
    assert {"", "train", "translate", "fid", "models", "prepare", "prepare remap", "prepare demo", "prepare spfeat",
            "prepare pairs", "segment-eval", "segment-eval score", "segment-eval train-and-test"} <= names


# --- item 16: metavars, nothing on flags ---


@pytest.mark.parametrize("words", [words for words, _ in _tree()], ids=lambda w: " ".join(w) or "s2r")
def test_help_shows_metavars_not_python_types(words):
    text = _help(words)
    for type_name in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list", "int range>"):
        assert type_name not in text, (words, type_name)
    assert re.search(r"--help\s+Show this message and exit", text), text


def test_every_parameter_has_a_metavar_and_flags_have_none():
    for words, command in _tree():
        ctx = command.make_context(" ".join(["s2r"] + words), [], resilient_parsing=True)
        for param in command.get_params(ctx):
            shown = param.display_type_rich(ctx)
            if getattr(param, "is_flag", False):
                assert shown is None, (words, param.opts)
            elif param.param_type_name == "option":
                assert shown and not shown.startswith("<"), (words, param.opts, shown)
            else:  # arguments: their name column is the metavar
                assert shown is None and param.display_name_raw.isupper(), (words, param.name)


def test_help_uses_the_documented_metavars():
    train = _help(["train"])
    for option, metavar in (("--synthetic", "SPEC"), ("--out", "PATH"), ("--size", "HxW"), ("--steps", "N"),
                            ("--set", "KEY=VALUE"), ("--config", "PATH")):
        assert re.search(rf"{option}\s+{re.escape(metavar)}\s", train), (option, train)
    assert re.search(r"--resume\s+Continue", train) and re.search(r"--dry-run\s+Print", train)
    assert re.search(r"--checkpoint\s+CKPT\s", _help(["translate"]))
    assert re.search(r"--lr\s+FLOAT\s", _help(["segment-eval", "train-and-test"]))
    assert re.search(r"Usage: s2r prepare remap \[OPTIONS\] SPEC", _help(["prepare", "remap"]))


# --- item 18: a worked, valid example in every --help ---


def _example_invocations(epilog: str) -> list[list[str]]:
    text = epilog.split("Example:", 1)[1]
    return [shlex.split(found) for found in re.findall(r"\bs2r\s+([^;|&()`]+)", text)]


def _resolve_example(args: list[str]) -> list[str]:
    """Parse ``s2r ARGS`` like the shell would: options of each group, then the command's own full parse.

    Returns the command's words; fails on an option a level does not have, a missing value or argument.
    """
    command, words, rest = typer.main.get_command(app), [], list(args)
    while hasattr(command, "commands"):
        known = {opt: param for param in command.params for opt in param.opts + param.secondary_opts}
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            assert option in known, f"`s2r {' '.join(words)}` has no option {option}"
            if not known[option].is_flag:
                rest.pop(0)
        assert rest, f"`s2r {' '.join(args)}` names no command"
        name = rest.pop(0)
        assert name in command.commands, f"`s2r {' '.join(words)}` has no command {name}"
        command, words = command.commands[name], words + [name]
    command.make_context(" ".join(["s2r"] + words), rest)  # raises on unknown options, missing values
    return words


@pytest.mark.parametrize("words,command", _tree(), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_every_help_has_a_valid_example(words, command):
    assert "Example:" in _help(words)
    assert command.epilog and "Example:" in command.epilog
    invocations = _example_invocations(command.epilog)
    assert invocations, command.epilog
    targets = [_resolve_example(args) for args in invocations]
    assert any(t[: len(words)] == words for t in targets), (words, targets)


def test_an_example_with_an_unknown_option_is_caught():
    with pytest.raises(Exception):
        _resolve_example(["train", "unit", "--out", "x", "--no-such-option"])
    with pytest.raises(AssertionError):
        _resolve_example(["--nope", "models"])


# --- item 17: the models table at 80 columns -----------------------------------------------------

ROWS = [
    {"name": "deeplabv3", "kind": "segmenter", "input": "image", "presets": ["paper", "tiny"],
     "parameters": {"paper": 39.64e6, "tiny": 39.64e6},
     "description": "torchvision DeepLabV3, ResNet-50 backbone (optional ImageNet weights)"},
    {"name": "sis", "kind": "translation", "input": "label", "presets": ["paper", "tiny"],
     "parameters": {"paper": 95.58e6, "tiny": 1.2e6},
     "description": "Pragmatic synthetic-to-real semantic image synthesis: labels + noise -> realistic image "
                    "(Pragmatic SIS)."},
]


def _render(width: int) -> str:
    from s2rcli.cli.models import models_table

    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(models_table(ROWS, width=width))
    return console.file.getvalue()


def test_models_table_is_readable_at_80_columns():
    text = _render(80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    for cell in ("paper: 39.64M", "tiny: 39.64M", "paper: 95.58M", "tiny: 1.20M", "synthetic-to-real", "translation"):
        assert any(cell in line for line in lines), (cell, text)
    words = re.findall(r"[\w.+-]+", " ".join(line for line in lines))
    for word in re.findall(r"[\w.+-]+", ROWS[1]["description"]):
        assert word in words, (word, text)  # wrapped between words, never inside one


def test_models_table_on_a_very_narrow_terminal_drops_the_description():
    text = _render(60)
    assert "…" not in text and "description" not in text and "paper: 95.58M" in text
    assert max(len(line) for line in text.splitlines()) <= 60


def test_models_command_uses_the_terminal_width(monkeypatch):
    import s2rcli.cli.models as models_cli

    monkeypatch.setattr(models_cli, "model_rows", lambda: ROWS)
    monkeypatch.setattr(models_cli.stdout, "_width", 80)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and "paper: 95.58M" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
