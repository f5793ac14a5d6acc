"""segment-eval compare: the same segmenter on raw, translated and real sets; the gap closed; resume."""

import json

import pytest
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.compare import gap_closed, parse_named
from s2rcli.data.demo import write_demo_world
from s2rcli.errors import S2RError

runner = CliRunner()


def test_parse_named_and_gap():
    assert parse_named(["unit=folder:out/unit", "out/sis/", "demo:w?split=real"]) == [
        ("unit", "folder:out/unit"), ("sis", "out/sis/"), ("w", "demo:w?split=real")]
    with pytest.raises(S2RError, match="unique"):
        parse_named(["a=x", "a=y"])
    with pytest.raises(S2RError, match="raw/real"):
        parse_named(["raw=x"])
    assert gap_closed(0.3, 0.1, 0.5) == pytest.approx(0.5)
    assert gap_closed(0.05, 0.1, 0.5) == pytest.approx(-0.125)   # worse than raw is negative
    assert gap_closed(0.3, 0.4, 0.4) is None                     # no gap to close


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp_world")
    write_demo_world(root, n_synthetic=4, n_real=4, n_real_val=4, size=(32, 64), seed=0, workers=1)
    return root


def test_compare_end_to_end_and_resume(world, tmp_path):
    syn, real, val = (f"demo:{world}?split={s}" for s in ("synthetic", "real", "real_val"))
    out = tmp_path / "cmp"
    args = ["--quiet", "segment-eval", "compare", "--synthetic", syn, "--translated", f"copy={real}",
            "--real-train", real, "--test", val, "--out", str(out), "--steps", "2", "--size", "32x64",
            "--seeds", "3", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["raw", "copy", "real"]
    # the "translated" set is the real set itself: the same training, so it closes the whole gap
    assert rows["copy"]["miou"]["3"] == rows["real"]["miou"]["3"]
    if rows["real"]["miou"]["3"] > rows["raw"]["miou"]["3"]:
        assert rows["copy"]["gap_closed"]["3"] == pytest.approx(1.0)
    assert (out / "compare.json").is_file() and (out / "compare.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["copy_s3", "raw_s3", "real_s3"]
    stamp = (out / "raw_s3" / "results.json").stat().st_mtime_ns
    (out / "real_s3" / "results.json").unlink()  # as if killed after training that run
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "raw_s3" / "results.json").stat().st_mtime_ns == stamp   # finished runs are reused
    assert json.loads(again.stdout)["rows"] == data["rows"]                # the resumed run gives the same numbers


def test_compare_bad_seeds(world, tmp_path):
    result = runner.invoke(app, ["segment-eval", "compare", "--synthetic", "x", "--translated", "y",
                                 "--real-train", "z", "--test", "w", "--out", str(tmp_path / "o"), "--seeds", "a"])
    assert result.exit_code == 1 and "--seeds" in result.output
