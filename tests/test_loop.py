import os
import signal

import pytest
import torch

from s2rcli.checkpoint import load_checkpoint
from s2rcli.training.loop import Observer, train
from s2rcli.training.observers import CheckpointObserver
from s2rcli.training.stats import MetricsLog, MetricsObserver

from toy_task import make_toy_task

CPU = torch.device("cpu")


class Recorder(Observer):
    def __init__(self):
        self.terms = []

    def on_step_end(self, state, terms):
        self.terms.append({k: float(v) for k, v in terms.items()})


def test_loss_decreases_and_ema_tracks():
    task = make_toy_task()
    rec = Recorder()
    state = train(task, steps=60, device=CPU, observers=[rec])
    assert state.status == "completed" and state.step == 60
    first = sum(t["G/recon"] for t in rec.terms[:5]) / 5
    last = sum(t["G/recon"] for t in rec.terms[-5:]) / 5
    assert last < 0.2 * first
    ema_w = state.ema_nets["G_ema"].weight
    assert not torch.equal(ema_w, task.nets["G"].weight) and torch.isfinite(ema_w).all()


def test_resume_is_exact(tmp_path):
    full = Recorder()
    train(make_toy_task(), steps=12, device=CPU, observers=[full], seed=5)

    first = Recorder()
    ckpt_obs = CheckpointObserver(tmp_path, every=100)
    train(make_toy_task(), steps=7, device=CPU, observers=[first, ckpt_obs], seed=5)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 7 and ckpt["sampler"]["position"] == 7

    second = Recorder()
    fresh = make_toy_task()
    with torch.no_grad():  # restore must overwrite these
        fresh.nets["G"].weight.add_(1.0)
    train(fresh, steps=12, device=CPU, observers=[second], seed=5, resume=ckpt)
    resumed = first.terms + second.terms
    assert len(resumed) == len(full.terms) == 12
    for a, b in zip(full.terms, resumed):
        assert a == pytest.approx(b, rel=0, abs=0), (a, b)


def test_accumulation_consumes_micro_batches():
    task = make_toy_task()
    train(task, steps=3, device=CPU, accumulate=2)
    assert task.data.position == 6


def test_sigint_stops_after_step_and_checkpoints(tmp_path):
    class Interrupt(Observer):
        def on_step_end(self, state, terms):
            if state.step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    ckpt_obs = CheckpointObserver(tmp_path, every=100)
    state = train(make_toy_task(), steps=50, device=CPU, observers=[Interrupt(), ckpt_obs])
    assert state.status == "interrupted" and state.step == 3
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 3 and set(ckpt["state_dicts"]) == {"G", "D", "G_ema"}


def test_metrics_and_best_checkpoint(tmp_path):
    obs = [MetricsObserver(tmp_path, every=5), CheckpointObserver(tmp_path, every=10, monitor="G/recon")]
    train(make_toy_task(), steps=20, device=CPU, observers=obs)
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert records[-1]["G/recon"] < records[0]["G/recon"]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["extra"]["monitor"] == "G/recon" and best["step"] in (10, 20)


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    from s2rcli.training.distributed import cleanup, init_distributed

    info = init_distributed(CPU)
    task = make_toy_task(batch=4, rank=rank, world=world)
    with torch.no_grad():  # ranks start apart; the loop must broadcast rank 0's weights
        task.nets["G"].weight.add_(float(rank))
    train(task, steps=5, device=CPU, dist=info, seed=0)
    torch.save({k: v.clone() for k, v in task.nets["G"].state_dict().items()}, f"{out}/rank{rank}.pt")
    cleanup()


def test_ddp_gloo_two_processes_keep_weights_in_sync(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    untrained = make_toy_task().nets["G"].state_dict()
    assert not torch.equal(w0["weight"], untrained["weight"])


def test_ema_warm_up_and_loss_smoothing():
    from s2rcli.training.loop import ema_decay_at
    from s2rcli.training.observers import smooth

    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(0.91)
    assert ema_decay_at(0.999, 10**6) == 0.999
    assert smooth([4.0, 4.0, 4.0], 0.5) == [4.0, 4.0, 4.0]  # debiased: no ramp from zero
    assert smooth([0.0, 2.0], 0.5) == pytest.approx([0.0, 4.0 / 3.0])
