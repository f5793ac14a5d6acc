"""The package's floors: every import points down (or stays on its floor).

floor 0  console, errors, utils/, checkpoint, pretrained, device   (and the package __init__)
floor 1  data/
floor 2  losses/, metrics/
floor 3  models/
floor 4  training/
floor 5  evaluation, inference, compare, sait_rounds
floor 6  cli/, __main__

Imports inside functions count too: hiding an upward import in a function body
does not make it point down.
"""

import ast
from pathlib import Path

import pytest

import s2rcli

ROOT = Path(s2rcli.__file__).parent
FLOORS = {
    "__init__": 0, "console": 0, "errors": 0, "utils": 0, "checkpoint": 0, "pretrained": 0, "device": 0,
    "data": 1, "losses": 2, "metrics": 2, "models": 3, "training": 4, "evaluation": 5, "inference": 5,
    "sait_rounds": 5, "compare": 5, "cli": 6, "__main__": 6,
}


def _part(module: str) -> str:
    """``s2rcli.data.io`` -> ``data``; ``s2rcli`` and its attributes (``s2rcli.__version__``) -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else "__init__"


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of an s2rcli module in ``path``."""
    package = ".".join(("s2rcli", *path.relative_to(ROOT).with_suffix("").parts))
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    base = package.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source if source is not None else path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            found += [(node.lineno, n) for n in names if n == "s2rcli" or n.startswith("s2rcli.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("s2rcli")]
    return found


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_part_has_a_floor():
    parts = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in MODULES}
    assert parts <= set(FLOORS), sorted(parts - set(FLOORS))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    mine = FLOORS[_part(".".join(("s2rcli", *path.relative_to(ROOT).with_suffix("").parts)))]
    upward = [f"line {line}: {module} (floor {FLOORS[_part(module)]})"
              for line, module in _imports(path) if FLOORS[_part(module)] > mine]
    assert not upward, f"{path.relative_to(ROOT)} (floor {mine}) imports upward: " + "; ".join(upward)


def test_the_check_catches_an_upward_import():
    """The walker resolves relative imports, also inside functions."""
    probe = ROOT / "data" / "_probe.py"
    found = _imports(probe, "import os\n\ndef f():\n    from ..training import loop\n    from . import io\n")
    assert found == [(4, "s2rcli.training"), (5, "s2rcli.data.io")]
    assert FLOORS[_part(found[0][1])] > FLOORS["data"]
