"""Inputs that must not be trusted blindly: stale partial SP-Feat files, pairs files made from other
data, a dataset paired with itself, a demo --out that holds other files, unreadable images under
on_error=skip, a torn metrics log on --resume, and training sizes the model cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s2rcli.cli.app import app
from s2rcli.data import io
from s2rcli.data.datasets import open_dataset
from s2rcli.data.pair_source import PairDataSource
from s2rcli.data.pairing import load_pairs, pair_features, save_pairs
from s2rcli.data.sampler import RandomPairSampler, make_pair_sampler
from s2rcli.data.seg_source import SegmentationData
from s2rcli.data.spfeat import compute_spfeat_file, load_spfeat, partial_path
from s2rcli.errors import S2RError
from s2rcli.training import runner as runner_module
from s2rcli.training.config import resolve_config
from s2rcli.training.runner import estimate_training_memory, probe_model_size, train_run
from s2rcli.training.stats import MetricsLog

from toy_task import write_folder_world, one_torch_thread  # noqa: F401 (autouse fixture)

cli = CliRunner()
FAST = ["--preset", "tiny", "--size", "32x64", "--set", "train.sample_every=1000", "--set", "train.log_every=1"]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return Path(path)


def _interrupt_at(dataset, index: int):
    """Make ``dataset.read_label`` stop the run (as Ctrl-C would) when it reaches ``index``."""
    original = dataset.read_label

    def read_label(i):
        if i == index:
            raise KeyboardInterrupt
        return original(i)

    dataset.read_label = read_label
    return dataset


@pytest.fixture()
def two_worlds(tmp_path):
    """Two folder worlds whose files share every name but hold other pictures."""
    a = write_folder_world(tmp_path / "a", n=5, size=(24, 40), seed=0)
    b = write_folder_world(tmp_path / "b", n=5, size=(24, 40), seed=1)
    for domain in ("synthetic", "real"):
        ds_a, ds_b = open_dataset(a[domain]), open_dataset(b[domain])
        assert ds_a.names == ds_b.names
        sizes = [[s.image.stat().st_size for s in ds.samples] for ds in (ds_a, ds_b)]
        assert sizes[0] != sizes[1]
    return a, b


# --- item 3: a partial SP-Feat file records its inputs ------------------------------------------


def test_a_partial_from_another_dataset_with_the_same_names_is_refused(two_worlds, tmp_path):
    a, b = two_worlds
    out = tmp_path / "real.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(_interrupt_at(open_dataset(a["real"]), 3), out, (1, 2), chunk_size=1, progress=False)
    part = partial_path(out)
    with np.load(part) as z:
        assert str(z["spec"]) == a["real"] and len(str(z["inputs"])) == 64  # what it was computed from
        assert z["done"].tolist() == [True, True, True, False, False]

    with pytest.raises(S2RError) as err:
        compute_spfeat_file(open_dataset(b["real"]), out, (1, 2), progress=False)
    text = str(err.value)
    assert str(part) in text and "files" in text and "--overwrite" in text and "delete" in text
    assert part.exists() and not out.exists()  # nothing replaced unasked

    # --overwrite discards it and computes b's features from scratch
    summary = compute_spfeat_file(open_dataset(b["real"]), out, (1, 2), overwrite=True, progress=False)
    assert summary["resumed"] == 0 and not part.exists()
    compute_spfeat_file(open_dataset(b["real"]), tmp_path / "fresh.npz", (1, 2), progress=False)
    np.testing.assert_array_equal(load_spfeat(out).features, load_spfeat(tmp_path / "fresh.npz").features)


def test_a_partial_is_refused_once_a_file_it_was_computed_from_changed(two_worlds, tmp_path):
    a, _ = two_worlds
    out = tmp_path / "real.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(_interrupt_at(open_dataset(a["real"]), 2), out, (1, 2), chunk_size=1, progress=False)
    label = Path(a["real"].split(":", 1)[1]) / "labels" / "rea_004.png"
    before = label.stat()
    Image.fromarray(np.zeros((24, 40), np.uint8)).save(label)  # the data changed since the partial
    assert label.stat().st_mtime_ns != before.st_mtime_ns or label.stat().st_size != before.st_size
    with pytest.raises(S2RError, match="files"):
        compute_spfeat_file(open_dataset(a["real"]), out, (1, 2), progress=False)


def test_a_partial_resumes_for_the_same_dataset_however_its_spec_is_spelt(two_worlds, tmp_path):
    a, _ = two_worlds
    out = tmp_path / "real.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(_interrupt_at(open_dataset(a["real"]), 3), out, (1, 2), chunk_size=1, progress=False,
                            spec=a["real"])
    spelt = a["real"].split(":", 1)[1] + "/?on_error=skip"
    summary = compute_spfeat_file(open_dataset(spelt), out, (1, 2), progress=False, spec=spelt)
    assert summary["resumed"] == 3 and not partial_path(out).exists()
    # the same files read another way (here: labels resized to their images) are other inputs
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(_interrupt_at(open_dataset(a["real"]), 3), tmp_path / "x.npz", chunk_size=1,
                            progress=False)
    with pytest.raises(S2RError, match="dataset spec"):
        compute_spfeat_file(open_dataset(a["real"] + "?mismatch=resize"), tmp_path / "x.npz", progress=False)


def test_cli_spfeat_refuses_a_partial_of_other_data_in_one_line(two_worlds, tmp_path):
    a, b = two_worlds
    out = tmp_path / "real.npz"
    with pytest.raises(KeyboardInterrupt):
        compute_spfeat_file(_interrupt_at(open_dataset(a["real"]), 1), out, chunk_size=1, progress=False)
    line = _one_error_line(cli.invoke(app, ["prepare", "spfeat", b["real"], "--out", str(out)]))
    assert "real.partial.npz" in line and "--overwrite" in line
    result = cli.invoke(app, ["prepare", "spfeat", b["real"], "--out", str(out), "--overwrite", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed"] == 0


# --- item 6: pairs files check their provenance; no dataset is paired with itself -----------------


def _pairs(world, tmp_path, k=2, name="pairs.npz"):
    real = tmp_path / f"{name}.real.npz"
    syn = tmp_path / f"{name}.syn.npz"
    compute_spfeat_file(world["real"], real, progress=False)
    compute_spfeat_file(world["synthetic"], syn, progress=False)
    result = cli.invoke(app, ["prepare", "pairs", "--real", str(real), "--synthetic", str(syn), "-k", str(k),
                              "--out", str(tmp_path / name), "--no-preview"])
    assert result.exit_code == 0, result.output
    return tmp_path / name


def test_training_refuses_pairs_computed_from_other_files_with_the_same_names(two_worlds, tmp_path):
    a, b = two_worlds
    pairs_path = _pairs(a, tmp_path)
    pairs = load_pairs(pairs_path)
    assert pairs.has_fingerprints and pairs.real_spec == a["real"]
    # the datasets it was made from: accepted
    sampler = make_pair_sampler(True, pairs_path, open_dataset(a["synthetic"]), open_dataset(a["real"]))
    assert len(list(zip(range(5), sampler))) == 5
    # other pictures under the same names: refused, naming the side and the recorded spec
    with pytest.raises(S2RError) as err:
        make_pair_sampler(True, pairs_path, open_dataset(b["synthetic"]), open_dataset(b["real"]))
    text = str(err.value)
    assert "other real images" in text and a["real"] in text and "prepare pairs" in text
    # also through the CLI, before the run folder is touched
    run = tmp_path / "run"
    result = cli.invoke(app, ["train", "unit", "--synthetic", b["synthetic"], "--real", b["real"], "--out", str(run),
                              "--smart-batch", "--pairs", str(pairs_path), "--steps", "1", *FAST])
    assert "other real images" in _one_error_line(result)


def test_an_old_pairs_file_without_fingerprints_warns_but_works(two_worlds, tmp_path, capsys):
    a, _ = two_worlds
    pairs_path = _pairs(a, tmp_path)
    with np.load(pairs_path) as z:
        arrays = {k: z[k] for k in z.files if not k.endswith(("_fingerprint", "_skipped"))}
    arrays["real_spec"] = np.asarray("folder:/somewhere/else")
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    capsys.readouterr()
    sampler = make_pair_sampler(True, old, open_dataset(a["synthetic"]), open_dataset(a["real"]))
    assert sampler.n_real == 5
    err = _flat(capsys.readouterr().err)
    assert "warning" in err and str(old) in err and "cannot be checked" in err and "/somewhere/else" in err


def test_prepare_pairs_refuses_to_pair_a_file_or_a_dataset_with_itself(two_worlds, tmp_path):
    a, _ = two_worlds
    real = tmp_path / "real.npz"
    compute_spfeat_file(a["real"], real, progress=False)
    out = tmp_path / "pairs.npz"
    line = _one_error_line(cli.invoke(app, ["prepare", "pairs", "--real", str(real), "--synthetic", str(real),
                                            "-k", "2", "--out", str(out)]))
    assert "same file" in line and "--synthetic" in line
    again = tmp_path / "again.npz"  # the same images, computed a second time under another name
    compute_spfeat_file(a["real"], again, progress=False)
    line = _one_error_line(cli.invoke(app, ["prepare", "pairs", "--real", str(real), "--synthetic", str(again),
                                            "-k", "2", "--out", str(out)]))
    assert "same image files" in line
    assert not out.exists()


@pytest.mark.parametrize("spelling", ["{spec}", "{path}/", "{copy}"])
def test_train_refuses_the_same_dataset_as_real_and_synthetic(two_worlds, tmp_path, spelling):
    import shutil

    a, _ = two_worlds
    path = a["synthetic"].split(":", 1)[1]
    shutil.copytree(path, tmp_path / "copy")
    other = spelling.format(spec=a["synthetic"], path=path, copy=f"folder:{tmp_path / 'copy'}")
    run = tmp_path / "run"
    result = cli.invoke(app, ["train", "unit", "--synthetic", a["synthetic"], "--real", other, "--out", str(run),
                              "--steps", "1", *FAST])
    line = _one_error_line(result)
    assert "--synthetic and --real" in line and "itself" in line
    assert not run.exists()


# --- item 7: prepare demo never writes into, or deletes from, an unrelated folder -----------------


DEMO = ["prepare", "demo", "--n-synthetic", "2", "--n-real", "1", "--n-real-val", "0", "--size", "32x64"]


def test_demo_refuses_a_non_empty_folder_that_is_not_a_demo_world(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    line = _one_error_line(cli.invoke(app, ["--quiet", *DEMO, "--out", str(out)]))
    assert "not empty" in line and "notes.txt" in line and "--overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # --overwrite writes the world beside the user's file and keeps it
    result = cli.invoke(app, ["--quiet", *DEMO, "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", "real", "real_val", "synthetic"]
    assert len(open_dataset(f"demo:{out}?split=synthetic")) == 2


def test_demo_overwrite_refuses_to_delete_files_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    (out / "real").mkdir(parents=True)
    (out / "real" / "holiday.jpg").write_bytes(b"\xff\xd8 my photo")
    line = _one_error_line(cli.invoke(app, ["--quiet", *DEMO, "--out", str(out), "--overwrite"]))
    assert "holiday.jpg" in line and "no demo world wrote" in line
    assert (out / "real" / "holiday.jpg").read_bytes() == b"\xff\xd8 my photo"
    assert sorted(p.name for p in out.iterdir()) == ["real"]
    # the same inside an earlier demo world: an extra file in its folders is not the demo's to delete
    world = tmp_path / "world"
    assert cli.invoke(app, ["--quiet", *DEMO, "--out", str(world)]).exit_code == 0
    (world / "synthetic" / "labels" / "my_edit.png").write_bytes(b"x")
    line = _one_error_line(cli.invoke(app, ["--quiet", *DEMO, "--out", str(world), "--overwrite", "--seed", "5"]))
    assert "my_edit.png" in line
    assert (world / "synthetic" / "labels" / "my_edit.png").exists()


def test_demo_help_documents_what_overwrite_replaces():
    result = cli.invoke(app, ["prepare", "demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "replaces only" in _flat(result.output) and "keeps every other file" in _flat(result.output)


# --- item 8: unreadable images and on_error ---------------------------------------------------------


def test_readers_notice_a_png_that_lost_its_end(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-12])  # only the IEND chunk is gone: Pillow alone decodes it
    with pytest.raises(S2RError, match="truncated"):
        io.read_image(path)
    with pytest.raises(S2RError, match="truncated"):
        io.verify_image(path)


def test_verify_image_notices_a_truncated_jpeg(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    assert io.verify_image(path) == (64, 64)
    _truncate(path, 0.6)  # Pillow's own verify() does not see this
    with pytest.raises(S2RError, match="x.jpg"):
        io.verify_image(path)


def test_spfeat_notices_a_truncated_image_and_skips_it_on_request(tmp_path, capsys):
    world = write_folder_world(tmp_path / "w", n=4, size=(24, 40))
    root = Path(world["real"].split(":", 1)[1])
    _truncate(root / "images" / "rea_001.png")
    with pytest.raises(S2RError, match="rea_001.png"):
        compute_spfeat_file(world["real"], tmp_path / "f.npz", progress=False)
    assert not (tmp_path / "f.npz").exists()
    capsys.readouterr()
    summary = compute_spfeat_file(world["real"] + "?on_error=skip", tmp_path / "f.npz", progress=False)
    assert summary["images"] == 3 and summary["skipped"] == 1
    loaded = load_spfeat(tmp_path / "f.npz")
    assert loaded.names.tolist() == ["rea_000", "rea_002", "rea_003"] and loaded.skipped.tolist() == ["rea_001"]
    err = _flat(capsys.readouterr().err)
    assert "rea_001" in err and "left out 1 of 4" in err


def test_spfeat_where_every_image_is_unreadable_is_an_error(tmp_path):
    world = write_folder_world(tmp_path / "w", n=2, size=(24, 40))
    root = Path(world["real"].split(":", 1)[1])
    for path in (root / "images").iterdir():
        _truncate(path)
    result = cli.invoke(app, ["prepare", "spfeat", world["real"] + "?on_error=skip", "--out", str(tmp_path / "f.npz")])
    assert result.exit_code == 1, result.output  # never a success with nothing in it
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert "rea_000" in _flat(result.output) and "rea_001" in _flat(result.output)  # each reported when left out
    assert "error:" in _flat(result.output) and "every one of the 2 images" in _flat(result.output), last
    assert not (tmp_path / "f.npz").exists()


def test_pairs_from_skipped_images_still_match_the_dataset(tmp_path):
    world = write_folder_world(tmp_path / "w", n=4, size=(24, 40))
    root = Path(world["real"].split(":", 1)[1])
    _truncate(root / "images" / "rea_002.png")
    real_spec = world["real"] + "?on_error=skip"
    compute_spfeat_file(real_spec, tmp_path / "real.npz", progress=False)
    compute_spfeat_file(world["synthetic"], tmp_path / "syn.npz", progress=False)
    real_f, syn_f = load_spfeat(tmp_path / "real.npz"), load_spfeat(tmp_path / "syn.npz")
    save_pairs(tmp_path / "p.npz", pair_features(real_f.features, syn_f.features, 2), real_f, syn_f)
    real_ds = open_dataset(real_spec)
    assert "rea_002" in real_ds.names  # its header is fine: it is found unreadable only when decoded
    sampler = make_pair_sampler(True, tmp_path / "p.npz", open_dataset(world["synthetic"]), real_ds)
    drawn = {real for _, (_, real) in zip(range(200), sampler)}
    assert real_ds.names.index("rea_002") not in drawn and len(drawn) == 3


def _broken_world(tmp_path, n=4):
    world = write_folder_world(tmp_path / "w", n=n, size=(24, 40))
    syn = Path(world["synthetic"].split(":", 1)[1])
    _truncate(syn / "images" / "syn_001.png")  # decodes badly, header fine
    (syn / "images" / "syn_002.png").write_bytes(b"")  # empty
    return world


def test_training_data_skips_unreadable_images_under_on_error_skip(tmp_path, capsys):
    world = _broken_world(tmp_path)
    syn = open_dataset(world["synthetic"] + "?on_error=skip")
    assert syn.names == ["syn_000", "syn_001", "syn_003"]  # the empty file is left out when opened
    real = open_dataset(world["real"])

    def batches(workers):
        source = PairDataSource(syn, real, RandomPairSampler(len(syn), len(real), seed=1), batch_size=3,
                                size=(16, 24), seed=1, labels=True, workers=workers)
        return [b for _, b in zip(range(6), source)]

    capsys.readouterr()
    first = batches(0)
    used = torch.cat([b["index"][:, 0] for b in first]).unique().tolist()
    assert 1 not in used and used  # syn_001 (index 1) never reaches a batch: index 2 (syn_003) stands in
    assert "syn_001" in _flat(capsys.readouterr().err)
    again = batches(0)  # a pure function of the draw index, whatever was met before
    for x, y in zip(first, again):
        torch.testing.assert_close(x["a"], y["a"])
    fixed = PairDataSource(syn, real, RandomPairSampler(3, len(real)), batch_size=1, size=(16, 24),
                           labels=True).fixed_batch(3)
    assert 1 not in fixed["index"][:, 0].tolist()

    # without on_error=skip the truncated file stops training, named
    strict = open_dataset(world["synthetic"] + "?limit=2")
    source = PairDataSource(strict, real, RandomPairSampler(2, len(real)), batch_size=4, size=(16, 24))
    with pytest.raises(S2RError, match="syn_001.png"):
        next(iter(source))
    with pytest.raises(S2RError, match="syn_002.png"):
        open_dataset(world["synthetic"]).read_image(2)


def test_segmentation_data_skips_unreadable_images_under_on_error_skip(tmp_path):
    world = _broken_world(tmp_path)
    data = SegmentationData([open_dataset(world["synthetic"] + "?on_error=skip")], size=(16, 24), batch_size=3)
    batches = [b for _, b in zip(range(4), data)]
    assert all(b["image"].shape == (3, 3, 16, 24) for b in batches)
    with pytest.raises(S2RError, match="syn_001.png"):
        next(iter(SegmentationData([open_dataset(world["synthetic"] + "?limit=2")], size=(16, 24), batch_size=2)))


def test_train_where_every_image_is_unreadable_exits_1(tmp_path):
    world = write_folder_world(tmp_path / "w", n=3, size=(40, 72))
    syn = Path(world["synthetic"].split(":", 1)[1])
    for path in (syn / "images").iterdir():
        _truncate(path)
    result = cli.invoke(app, ["train", "unit", "--synthetic", world["synthetic"] + "?on_error=skip", "--real",
                              world["real"], "--out", str(tmp_path / "run"), "--steps", "2", *FAST])
    assert result.exit_code == 1, result.output
    assert "no sample of" in _flat(result.output) and "could be read" in _flat(result.output)


# --- item 9: a torn metrics log does not block --resume -------------------------------------------------


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1.0}\n{"step": 2, "x": 2.0}\n{"step": 3, "x"')
    assert [r["step"] for r in MetricsLog(path).read()] == [1, 2]
    err = _flat(capsys.readouterr().err)
    assert "metrics.jsonl line 3" in err and "half-written" in err
    MetricsLog(path).truncate_after(5)
    assert path.read_text() == '{"step": 1, "x": 1.0}\n{"step": 2, "x": 2.0}\n'
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')  # damage in the middle is not guessed about
    with pytest.raises(S2RError, match="line 2"):
        MetricsLog(path).read()


def test_resume_after_a_torn_metrics_line_keeps_one_record_per_step(tmp_path, capsys):
    world = write_folder_world(tmp_path / "w", n=3, size=(40, 72))
    run = tmp_path / "run"
    options = {"data.synthetic": world["synthetic"], "data.real": world["real"], "data.size": [32, 64],
               "train.steps": 3, "train.log_every": 1, "train.checkpoint_every": 2, "train.sample_every": 1000}
    train_run("unit", run, preset="tiny", options=options, device=torch.device("cpu"))
    metrics = run / "metrics.jsonl"
    with open(metrics, "a") as fh:  # a run killed while logging step 4
        fh.write('{"step": 4, "D/loss": 0.')
    capsys.readouterr()
    train_run("unit", run, preset="tiny", options={**options, "train.steps": 5}, resume=True,
              device=torch.device("cpu"))
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    err = _flat(capsys.readouterr().err)
    assert "metrics.jsonl" in err and "line 4" in err


# --- item 11: training sizes the model cannot take ----------------------------------------------------------


def test_probe_finds_the_stride_and_minimum_of_unit():
    cfg = resolve_config("unit", preset="tiny")
    probe = probe_model_size("unit", cfg["model_kwargs"])
    assert probe.multiple == 4 and probe.min_side == 32
    small = estimate_training_memory(probe, (64, 128), 1)
    assert estimate_training_memory(probe, (128, 256), 1) - small == pytest.approx(
        3 * (small - 16 * probe.parameters), rel=1e-6)  # activations grow with the pixels


@pytest.mark.parametrize("size,words", [("7x9", ["at least 32", "multiples of 4", "downsamples 2 times"]),
                                        ("36x66", ["multiples of 4", "e.g. --size 36x64"]),
                                        ("24x32", ["at least 32"])])
def test_sizes_the_model_cannot_take_are_refused_in_one_line(tmp_path, size, words):
    world = write_folder_world(tmp_path / "w", n=2, size=(40, 72))
    run = tmp_path / "run"
    result = cli.invoke(app, ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
                              "--out", str(run), "--preset", "tiny", "--steps", "1", "--size", size])
    line = _one_error_line(result)
    assert f"--size {size}" in line and all(w in line for w in words), line
    assert not run.exists()


def test_a_size_too_large_for_memory_is_refused_with_the_estimate(tmp_path, monkeypatch):
    world = write_folder_world(tmp_path / "w", n=2, size=(40, 72))
    run = tmp_path / "run"
    args = ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"], "--out", str(run),
            "--preset", "tiny", "--steps", "1"]
    line = _one_error_line(cli.invoke(app, [*args, "--size", "100000x100000"]))
    assert "needs about" in line and "TiB" in line and "available memory" in line and "--batch-size" in line
    assert not run.exists()
    # the limit is what the machine has: with 1 MiB left, a small size is refused too
    monkeypatch.setattr(runner_module, "available_memory", lambda device: (2**20, "available memory (RAM)"))
    line = _one_error_line(cli.invoke(app, [*args, "--size", "64x128"]))
    assert "only 1.0 MiB of available memory (RAM)" in line
    assert not run.exists()
