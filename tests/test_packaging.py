"""The wheel works on its own: built from the project, installed into a fresh venv.

The fresh venv sees the running environment's dependencies (torch, typer, ...)
through a ``.pth`` file listing this interpreter's site-packages directories, so
nothing is downloaded. ``.pth`` files inside directories added that way are not
processed, so neither the editable install of the project nor the source tree
leaks in: a module or subpackage missing from the wheel makes these tests fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest

import s2rcli

REPO = Path(__file__).resolve().parents[1]
# What the build reads: the metadata files and the package (setup.* / MANIFEST.in if ever added).
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg")
TIMEOUT = 600


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT, **kwargs
    )


def _check(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def _backend_in_this_env() -> bool:
    """setuptools importable here and at least as new as [build-system] requires."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'"setuptools\s*>=\s*(\d+)', text)
    needed = int(match.group(1)) if match else 0
    return int(dist_version("setuptools").split(".")[0]) >= needed


def _copy_build_inputs(dest: Path) -> None:
    """A clean copy, so no stale build/ or egg-info in the checkout goes into the wheel."""
    dest.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "s2rcli", dest / "s2rcli", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _scripts_dir(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts" if os.name == "nt" else "bin")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", COLUMNS="200", NO_COLOR="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheel, install it (no deps) into a fresh venv, expose this env's deps to it."""
    root = tmp_path_factory.mktemp("packaging")
    src, wheel_dir, venv_dir, cwd = root / "src", root / "wheels", root / "venv", root / "cwd"
    cwd.mkdir()
    env = _clean_env()
    _copy_build_inputs(src)

    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", wheel_dir, src]
    if _backend_in_this_env():
        build.insert(4, "--no-build-isolation")
    build_log = _check(_run(build, cwd=root, env=env))
    (wheel,) = wheel_dir.glob("s2rcli-*.whl")

    _check(_run([sys.executable, "-m", "venv", "--without-pip", venv_dir]))
    python = _scripts_dir(venv_dir) / ("python.exe" if os.name == "nt" else "python")
    # pip >= 22.3 installs into another interpreter's environment with --python.
    _check(_run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], env=env))

    # After installing: otherwise pip would see (and might touch) the editable install through the .pth.
    purelib = _check(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env))
    deps = [p for p in sys.path if p and Path(p).is_dir() and {"site-packages", "dist-packages"} & set(Path(p).parts)]
    Path(purelib.strip(), "_s2r_test_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")

    return {"wheel": wheel, "build_log": build_log, "venv": venv_dir, "python": python, "cwd": cwd, "env": env}


def _s2r(installed, *args) -> str:
    exe = _scripts_dir(installed["venv"]) / ("s2r.exe" if os.name == "nt" else "s2r")
    return _check(_run([exe, *args], cwd=installed["cwd"], env=installed["env"]))


def test_build_has_no_deprecation_warnings(installed):
    lines = [line for line in installed["build_log"].splitlines() if "deprecat" in line.lower()]
    assert not lines, "\n".join(lines)


def test_wheel_holds_every_package_file_and_the_licence(installed):
    expected = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "s2rcli").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    with zipfile.ZipFile(installed["wheel"]) as zf:
        names = set(zf.namelist())
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert installed["wheel"].name.startswith(f"s2rcli-{s2rcli.__version__}-")


def test_fresh_venv_imports_the_wheel_not_the_checkout(installed):
    out = _check(
        _run(
            [installed["python"], "-c", "import s2rcli; print(s2rcli.__file__)"],
            cwd=installed["cwd"],
            env=installed["env"],
        )
    )
    location = Path(out.strip().splitlines()[-1]).resolve()
    assert location.is_relative_to(installed["venv"].resolve()), location
    assert not location.is_relative_to(REPO / "s2rcli"), location


def test_installed_cli_help(installed):
    out = _s2r(installed, "--help")
    assert "Usage" in out and "models" in out and "train" in out


def test_installed_cli_models(installed):
    out = _s2r(installed, "models")
    assert "unit" in out and "sis" in out


def test_installed_cli_version(installed):
    assert _s2r(installed, "--version").strip() == f"s2r {s2rcli.__version__}"
