"""Regenerate docs/cli/*.txt: the --help output of every s2r command.

The command list is read from the Typer app itself, so a new command gets its
page without editing this file; pages of commands that no longer exist are removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from typer.testing import CliRunner

from s2rcli.cli.app import app


def command_paths(command, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """``[[], ["prepare"], ["prepare", "remap"], ...]``: every command and group, depth first, sorted.

    ``command`` is the click command Typer builds (Typer bundles its own click;
    a group is whatever has ``commands``).
    """
    paths = [list(prefix)]
    group = command
    if getattr(group, "commands", None):
        for name in sorted(group.commands):
            paths += command_paths(group.commands[name], (*prefix, name))
    return paths


def main() -> None:
    os.environ["COLUMNS"] = "100"
    out = Path(__file__).parent / "cli"
    out.mkdir(exist_ok=True)
    runner = CliRunner()
    written = set()
    for cmd in command_paths(typer.main.get_command(app)):
        result = runner.invoke(app, cmd + ["--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        if result.exit_code != 0:
            raise SystemExit(f"s2r {' '.join(cmd)} --help failed: {result.output}")
        path = out / f"{'-'.join(['s2r', *cmd])}.txt"
        path.write_text("\n".join(line.rstrip() for line in result.output.splitlines()).strip("\n") + "\n")
        written.add(path)
        print("wrote", path)
    for stale in set(out.glob("s2r*.txt")) - written:
        stale.unlink()
        print("removed", stale)


if __name__ == "__main__":
    main()
