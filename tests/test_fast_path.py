"""The training fast path (channels_last, CPU bf16, optimiser kernels, compile), its exactness and resume,
host syncs of the observers, the data source's decoded-image cache, the label reader and writer of
`prepare remap`, and the chunked exact pairing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s2rcli.checkpoint import load_checkpoint
from s2rcli.cli.app import app
from s2rcli.data import io
from s2rcli.data.pair_source import DecodedCache, PairDataSource
from s2rcli.data.pairing import NearestSynthetic, pair_features
from s2rcli.data.remap import encode_label_png
from s2rcli.data.sampler import RandomPairSampler
from s2rcli.device import DistInfo
from s2rcli.errors import S2RError
from s2rcli.models import build_task, create_model
from s2rcli.training import loop
from s2rcli.training.config import preset_defaults, resolve_config
from s2rcli.training.loop import FastPath, Observer, TrainState, set_optimizer_impl, train
from s2rcli.training.observers import CheckpointObserver
from s2rcli.training.runner import resolve_fast_path, train_run
from s2rcli.training.stats import MetricsObserver

from toy_task import MemoryDataset, make_toy_task, one_torch_thread, write_folder_world  # noqa: F401 (autouse fixture)

CPU = torch.device("cpu")
SIZE = (32, 64)


class Losses(Observer):
    """Records every logged term of every step, as floats (the test reads them; the loop does not)."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_step_end(self, state, terms):
        self.steps.append({k: float(v) for k, v in terms.items()})


def _unit_task(seed: int = 0):
    cfg = preset_defaults("unit", "tiny")
    cfg["data"].update(synthetic="mem", real="mem", size=list(SIZE))
    data = {"synthetic": MemoryDataset(4, SIZE, seed=1), "real": MemoryDataset(4, SIZE, seed=2)}
    torch.manual_seed(seed)
    model = create_model("unit", **cfg["model_kwargs"])
    return cfg, build_task(model, cfg, data, DistInfo(), CPU)


def _run(fast: FastPath, steps: int = 4, *, resume=None, task=None):
    cfg, fresh = _unit_task()
    task = task or fresh
    losses = Losses()
    state = train(task, steps=steps, device=CPU, config=cfg, fast=fast, observers=[losses], resume=resume)
    return losses.steps, state


# --- what each setting means --------------------------------------------------------------------


def test_settings_resolve_per_device_and_old_runs_keep_the_plain_loop(monkeypatch):
    assert FastPath.resolve({}, CPU) == FastPath()  # a run from before these options: the plain loop
    auto = {"channels_last": None, "cpu_bf16": None, "optimizer_impl": None, "compile": False}
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert FastPath.resolve(auto, CPU) == FastPath(channels_last=False, cpu_bf16=True, optimizer="foreach")
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    assert FastPath.resolve(auto, CPU) == FastPath(channels_last=False, cpu_bf16=False, optimizer="foreach")
    cuda = FastPath.resolve(auto, torch.device("cuda"))
    assert cuda == FastPath(channels_last=True, cpu_bf16=False, optimizer="fused")  # bf16 on CUDA is --amp
    explicit = {"channels_last": False, "cpu_bf16": True, "optimizer_impl": "for-loop", "compile": True,
                "compile_mode": "max-autotune"}
    assert FastPath.resolve(explicit, CPU) == FastPath(False, True, "max-autotune", True, "for-loop")


def test_a_new_run_records_what_automatic_meant(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    cfg = resolve_config("unit", preset="tiny")
    assert cfg["train"]["cpu_bf16"] is None and cfg["train"]["compile"] is False
    resolved = resolve_fast_path(cfg, CPU)
    assert resolved["train"]["cpu_bf16"] is False and resolved["train"]["channels_last"] is False
    assert resolve_fast_path(cfg, torch.device("cuda"))["train"]["channels_last"] is True
    assert resolved["train"]["optimizer_impl"] == "foreach" and cfg["train"]["cpu_bf16"] is None  # a copy
    with pytest.raises(S2RError, match="train.cpu_bf16 must be true, false or null"):
        resolve_fast_path(resolve_config("unit", preset="tiny", sets=["train.cpu_bf16=maybe"]), CPU)
    with pytest.raises(S2RError, match="train.optimizer_impl must be one of"):
        resolve_fast_path(resolve_config("unit", preset="tiny", sets=["train.optimizer_impl=turbo"]), CPU)


def test_cli_flags_set_the_fast_path(tmp_path):
    world = write_folder_world(tmp_path / "world", n=4, size=(40, 72))
    result = CliRunner().invoke(app, ["train", "unit", "--synthetic", world["synthetic"], "--real", world["real"],
                                      "--out", str(tmp_path / "run"), "--preset", "tiny", "--dry-run",
                                      "--compile", "--no-cpu-bf16", "--channels-last"])
    assert result.exit_code == 0, result.output
    train_cfg = json.loads(result.stdout)["train"]
    assert train_cfg["compile"] is True and train_cfg["cpu_bf16"] is False and train_cfg["channels_last"] is True


# --- exactness -------------------------------------------------------------------------------------


def test_foreach_adam_is_bit_identical_to_the_plain_loop():
    plain, plain_state = _run(FastPath(optimizer="for-loop"))
    foreach, foreach_state = _run(FastPath(optimizer="foreach"))
    assert foreach == plain
    a, b = plain_state.task.nets["G"].state_dict(), foreach_state.task.nets["G"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(g["foreach"] is True for o in foreach_state.task.optimizers.values() for g in o.param_groups)


def test_set_optimizer_impl_switches_in_place():
    net = torch.nn.Linear(3, 2)
    adam = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.StepLR(adam, 1)
    assert set_optimizer_impl(adam, "fused") and adam.param_groups[0]["fused"] and not adam.param_groups[0]["foreach"]
    assert set_optimizer_impl(adam, "foreach") and adam.param_groups[0]["foreach"] and not adam.param_groups[0]["fused"]
    assert sched.optimizer is adam  # the scheduler still steps this optimiser
    assert not set_optimizer_impl(adam, None)


# Within fp tolerance of eager fp32 over the first steps (measured: channels_last about 1e-6 relative,
# bf16 about 1e-2); bit for bit against itself.
TOLERANCE = {"channels_last": 1e-4, "cpu_bf16": 5e-2, "both": 5e-2}
MODES = {"channels_last": FastPath(channels_last=True, optimizer="foreach"),
         "cpu_bf16": FastPath(cpu_bf16=True, optimizer="foreach"),
         "both": FastPath(channels_last=True, cpu_bf16=True, optimizer="foreach")}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_fast_modes_match_eager_within_tolerance_and_themselves_exactly(mode):
    eager, _ = _run(FastPath())
    fast, _ = _run(MODES[mode])
    again, _ = _run(MODES[mode])
    assert again == fast  # deterministic within the mode
    for step_eager, step_fast in zip(eager, fast):
        assert step_eager.keys() == step_fast.keys()
        for key, value in step_eager.items():
            assert step_fast[key] == pytest.approx(value, rel=TOLERANCE[mode], abs=1e-4), (mode, key)
    if mode != "channels_last":  # bf16 is really in use: not bit-identical to fp32
        assert fast != eager


def test_resume_is_exact_on_the_fast_path():
    fast = MODES["both"]
    full, _ = _run(fast, steps=5)
    first, state = _run(fast, steps=2)
    ckpt = state.checkpoint()
    _, task = _unit_task(seed=123)  # other initial weights: everything must come from the checkpoint
    rest, _ = _run(fast, steps=5, resume=ckpt, task=task)
    assert first + rest == full


def test_a_failing_compile_says_so_once_and_trains_eagerly(monkeypatch, capsys):
    eager, _ = _run(FastPath())

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    fallback, _ = _run(FastPath(compile=True))
    assert fallback == eager
    err = capsys.readouterr().err
    assert err.count("torch.compile is unavailable here") == 1 and "no C++ compiler found" in err

    def no_compile(fn, **kwargs):
        raise RuntimeError("dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", no_compile)
    again, _ = _run(FastPath(compile=True))
    assert again == eager


def test_runner_records_the_fast_path_and_resumes_it(tmp_path):
    world = write_folder_world(tmp_path / "world", n=4, size=(40, 72))
    opts = {"data.synthetic": world["synthetic"], "data.real": world["real"], "data.size": [32, 48]}
    sets = ["train.log_every=1", "train.sample_every=1000", "train.channels_last=true", "train.cpu_bf16=true"]
    train_run("unit", tmp_path / "run", preset="tiny", sets=sets, options={**opts, "train.steps": 2})
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["channels_last"] is True and cfg["train"]["cpu_bf16"] is True
    assert cfg["train"]["optimizer_impl"] == "foreach"  # automatic, resolved for this CPU
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["config"] == cfg
    with pytest.raises(S2RError, match="--resume cannot change train.cpu_bf16"):
        train_run("unit", tmp_path / "run", resume=True, sets=["train.cpu_bf16=false"], options={"train.steps": 3})
    state = train_run("unit", tmp_path / "run", resume=True, sets=["train.cache_mb=0"], options={"train.steps": 3})
    assert state.step == 3


# --- host syncs ------------------------------------------------------------------------------------


class Counting(torch.Tensor):
    """A tensor that counts how often it is read on the host (float(), .item())."""

    reads = 0

    def __float__(self):
        Counting.reads += 1
        return float(self.as_subclass(torch.Tensor))

    def item(self):
        Counting.reads += 1
        return self.as_subclass(torch.Tensor).item()


def _terms(value: float) -> dict[str, torch.Tensor]:
    return {"G/loss": torch.tensor(value).as_subclass(Counting), "D/loss": torch.tensor(2 * value).as_subclass(Counting)}


def test_metrics_and_checkpoints_read_the_terms_only_when_they_write(tmp_path):
    task = make_toy_task()
    state = TrainState(task=task, total_steps=100, device=CPU, config={}, run_dir=tmp_path)
    metrics = MetricsObserver(tmp_path, every=5)
    checkpoints = CheckpointObserver(tmp_path, every=5, monitor="G/loss")
    metrics.on_train_start(state)
    Counting.reads = 0
    for step in range(1, 5):
        state.step = step
        metrics.on_step_end(state, _terms(step))
        checkpoints.on_step_end(state, _terms(step))
    assert Counting.reads == 0  # four steps: nothing read back
    state.step = 5
    metrics.on_step_end(state, _terms(5.0))
    checkpoints.on_step_end(state, _terms(5.0))
    assert Counting.reads > 0
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["G/loss"] == pytest.approx(3.0) and record["D/loss"] == pytest.approx(6.0)
    assert checkpoints.best == pytest.approx(3.0)  # the mean of G/loss over the five steps


# --- data --------------------------------------------------------------------------------------------


class CountingReads(MemoryDataset):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0

    def read_image(self, i):
        self.reads += 1
        return self.images[i].copy()  # a fresh array each time, like a decoder


def _source(cache_mb: float, workers: int = 0, prefetch: int = 2):
    syn, real = CountingReads(5, (40, 72), seed=1), CountingReads(3, (40, 72), seed=2)
    sampler = RandomPairSampler(len(syn), len(real), seed=0)
    return PairDataSource(syn, real, sampler, batch_size=2, size=(32, 48), seed=0, workers=workers,
                          cache_mb=cache_mb, prefetch=prefetch), syn, real


def _take(source, n):
    it = iter(source)
    return [next(it) for _ in range(n)]


def test_each_image_is_decoded_once_and_batches_do_not_change():
    cached, syn, real = _source(cache_mb=64)
    plain, syn0, real0 = _source(cache_mb=0)
    a, b = _take(cached, 12), _take(plain, 12)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert syn.reads <= 5 and real.reads <= 3  # each file once
    assert syn0.reads == 24 and real0.reads == 24  # without the cache: every draw
    assert cached.cache.hits > 0 and cached.cache.used <= cached.cache.budget


def test_the_cache_stays_within_its_budget_and_never_hands_out_writable_arrays():
    cache = DecodedCache(budget_bytes=100)
    small = cache.get("a", lambda: np.zeros(60, np.uint8))
    big = cache.get("b", lambda: np.zeros(60, np.uint8))  # would pass the budget: not kept
    assert cache.used == 60 and not small.flags.writeable and big.flags.writeable
    assert cache.get("a", lambda: pytest.fail("decoded twice")) is small
    own = np.ones(10, np.uint8)
    cache.get("c", lambda: own)
    assert own.flags.writeable  # the caller's own array is not changed; the cache holds a read-only view


def test_workers_with_prefetch_give_the_same_batches():
    plain, _, _ = _source(cache_mb=64)
    loaded, _, _ = _source(cache_mb=64, workers=1, prefetch=3)
    for x, y in zip(_take(plain, 5), _take(loaded, 5)):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert loaded.consumed == 10


def test_label_reader_and_writer(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 34, (37, 53)).astype(np.uint8)
    palette = Image.fromarray(ids, mode="L").convert("P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    palette.save(tmp_path / "p.png")
    Image.fromarray(ids).save(tmp_path / "l.png")
    for name in ("p.png", "l.png"):
        raw = io.read_index_label(tmp_path / name)
        np.testing.assert_array_equal(raw, np.asarray(Image.open(tmp_path / name)))
        assert raw.dtype == np.uint8 and not raw.flags.writeable
    (tmp_path / "w.png").write_bytes(encode_label_png(ids))
    written = Image.open(tmp_path / "w.png")
    assert written.mode == "L"
    np.testing.assert_array_equal(np.asarray(written), ids)
    assert encode_label_png(ids) == encode_label_png(ids.copy())  # deterministic


# --- pairing ---------------------------------------------------------------------------------------


def _brute(real, synthetic):
    """Squared distances in float64 and each row's ranking by (distance, index)."""
    r, s = real.astype(np.float64), synthetic.astype(np.float64)
    sq = ((r[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(s)), sq.shape), sq), axis=1)
    return sq, order


def _layouts(n, rng, d=48):
    """Clustered, partly sparse vectors (like SP-Feat) with exact duplicates, so ties occur."""
    centres = rng.dirichlet(np.full(d, 0.2), size=12)
    x = centres[rng.integers(0, 12, n)] + 0.02 * rng.random((n, d)) * (rng.random((n, d)) < 0.3)
    x[1::7] = x[::7][: len(x[1::7])]  # duplicates
    return x.astype(np.float32)


@pytest.mark.parametrize("m", [1, 7, 40, 150])
def test_nearest_synthetic_is_exact_with_ties_by_index(m):
    rng = np.random.default_rng(m)
    synthetic, real = _layouts(600, rng), _layouts(70, rng)
    nn = NearestSynthetic(synthetic, dims=8)  # few dimensions: the pruned path, not the dense one
    dist, idx = nn.query(real, m)
    sq, order = _brute(real, synthetic)
    np.testing.assert_array_equal(idx, order[:, :m])
    np.testing.assert_allclose(dist, np.sqrt(np.take_along_axis(sq, order[:, :m], 1)), rtol=1e-6, atol=1e-6)


def _reference_pairs(real, synthetic, k, max_uses, depth=None):
    """The documented rule, edge by edge in pure Python, on a brute-force ranking."""
    sq, order = _brute(real, synthetic)
    ranked_d = np.sqrt(np.take_along_axis(sq, order, 1)).astype(np.float32)
    n_real, n_syn = len(real), len(synthetic)
    depth = n_syn if depth is None else min(n_syn, max(k, depth))
    chosen = [[] for _ in range(n_real)]
    uses = [0] * n_syn
    rows, lo, m = list(range(n_real)), 0, min(depth, 16 * k)
    while True:
        d = ranked_d[rows, lo:m]
        j_all = order[rows, lo:m]
        width = d.shape[1]
        for e in np.argsort(d.ravel(), kind="stable").tolist():
            i, j = rows[e // width], int(j_all.ravel()[e])
            if len(chosen[i]) < k and uses[j] < max_uses and j not in [c for _, c in chosen[i]]:
                chosen[i].append((float(d.ravel()[e]), j))
                uses[j] += 1
        short = [i for i in rows if len(chosen[i]) < k]
        if not short or m >= depth:
            break
        rows, lo, m = short, m, min(depth, 4 * m)
    for i in short:
        for c in range(depth):
            j = int(order[i, c])
            if len(chosen[i]) < k and j not in [x for _, x in chosen[i]]:
                chosen[i].append((float(ranked_d[i, c]), j))
                uses[j] += 1
    neighbors = np.array([[j for _, j in sorted(row, key=lambda t: (t[0], t[1]))] for row in chosen])
    return neighbors, np.array(uses)


@pytest.mark.parametrize("k,max_uses,depth", [(3, 1, None), (5, 2, None), (4, 1, 20), (2, 50, None), (6, 3, 12)])
def test_pairing_follows_the_rule_edge_by_edge(k, max_uses, depth):
    rng = np.random.default_rng(k * 10 + max_uses)
    synthetic, real = _layouts(300, rng), _layouts(90, rng)
    result = pair_features(real, synthetic, k, max_uses=max_uses, search_depth=depth)
    neighbors, uses = _reference_pairs(real, synthetic, k, max_uses, depth)
    np.testing.assert_array_equal(result.neighbors, neighbors)
    np.testing.assert_array_equal(result.use_counts, uses)
