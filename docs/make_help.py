"""Regenerate docs/cli/*.txt: the --help output of every s2r command."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from s2rcli.cli.app import app

COMMANDS = [[], ["prepare"], ["prepare", "remap"], ["prepare", "demo"], ["prepare", "spfeat"], ["prepare", "pairs"],
            ["train"], ["translate"], ["segment-eval"], ["segment-eval", "score"], ["segment-eval", "train-and-test"],
            ["fid"], ["models"]]


def main() -> None:
    os.environ["COLUMNS"] = "100"
    out = Path(__file__).parent / "cli"
    out.mkdir(exist_ok=True)
    runner = CliRunner()
    for cmd in COMMANDS:
        result = runner.invoke(app, cmd + ["--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        name = "-".join(["s2r"] + cmd)
        (out / f"{name}.txt").write_text("\n".join(line.rstrip() for line in result.output.splitlines()).strip("\n") + "\n")
        print("wrote", out / f"{name}.txt")


if __name__ == "__main__":
    main()
