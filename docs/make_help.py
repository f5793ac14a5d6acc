"""Regenerate docs/cli/*.txt: the --help output of every s2r command (found by walking the command tree)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from typer.testing import CliRunner

from s2rcli.cli.app import app


def command_paths() -> list[list[str]]:
    """Every command and group of ``s2r`` as its words, root first, in registration order."""
    paths: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return paths


def main() -> None:
    os.environ["COLUMNS"] = "100"
    out = Path(__file__).parent / "cli"
    out.mkdir(exist_ok=True)
    runner = CliRunner()
    for cmd in command_paths():
        result = runner.invoke(app, cmd + ["--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        if result.exit_code != 0:
            raise SystemExit(f"s2r {' '.join(cmd)} --help failed:\n{result.output}")
        name = "-".join(["s2r"] + cmd)
        (out / f"{name}.txt").write_text("\n".join(line.rstrip() for line in result.output.splitlines()).strip("\n") + "\n")
        print("wrote", out / f"{name}.txt")


if __name__ == "__main__":
    main()
