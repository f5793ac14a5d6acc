"""The training loop: one function, readable top to bottom.

Everything model-specific lives in the :class:`~s2rcli.models.contract.TrainTask`
(networks, optimisers, data, loss); everything around the loop (progress bar,
metrics, checkpoints, sample grids) is an :class:`Observer`.
"""

from __future__ import annotations

import contextlib
import copy
import random
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checkpoint import capture_rng_state, make_checkpoint, restore_rng_state
from ..device import DistInfo
from ..models.contract import TrainTask
from .distributed import all_reduce_gradients, broadcast_parameters


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch; ranks get distinct but fixed streams."""
    seed = int(seed) + 1000003 * int(rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """What observers see: the task, the counters, and how to snapshot it all."""

    task: TrainTask
    total_steps: int
    device: torch.device
    config: dict[str, Any]
    run_dir: Path | None = None
    dist: DistInfo = field(default_factory=DistInfo)
    step: int = 0
    scaler: Any = None
    ema_nets: dict[str, torch.nn.Module] = field(default_factory=dict)
    status: str = "running"

    def checkpoint(self) -> dict[str, Any]:
        """A complete, resumable checkpoint of the current step."""
        task = self.task
        state_dicts = {name: net.state_dict() for name, net in task.nets.items()}
        state_dicts.update({name: net.state_dict() for name, net in self.ema_nets.items()})
        return make_checkpoint(
            model=task.model_name,
            model_kwargs=task.model_kwargs,
            label_space=task.label_space,
            state_dicts=state_dicts,
            optimizers={k: o.state_dict() for k, o in task.optimizers.items()},
            schedulers={k: s.state_dict() for k, s in task.schedulers.items()},
            scaler=self.scaler.state_dict() if self.scaler is not None and self.scaler.is_enabled() else {},
            step=self.step,
            rng=capture_rng_state(),
            sampler=task.data.state_dict(),
            config=self.config,
        )

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load everything :meth:`checkpoint` saved, so training continues exactly."""
        task = self.task
        for name, net in task.nets.items():
            net.load_state_dict(ckpt["state_dicts"][name])
        for name, net in self.ema_nets.items():
            if name in ckpt["state_dicts"]:
                net.load_state_dict(ckpt["state_dicts"][name])
        for name, opt in task.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, sched in task.schedulers.items():
            sched.load_state_dict(ckpt["schedulers"][name])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        task.data.load_state_dict(ckpt.get("sampler", {}))
        self.step = int(ckpt["step"])
        restore_rng_state(ckpt.get("rng", {}))


class Observer:
    """Watches the loop; never changes what it computes."""

    def on_train_start(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        pass

    def on_train_end(self, state: TrainState, status: str) -> None:
        """``status`` is ``"completed"``, ``"interrupted"`` (Ctrl-C, after the step
        in flight finished) or ``"failed"`` (an exception; the state may be mid-step)."""


def _amp_context(device: torch.device, amp: str | None):
    if not amp or device.type != "cuda":  # AMP is a CUDA feature; CPU runs in fp32
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class _StopFlag:
    """Ctrl-C asks the loop to stop after the step in flight; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> "_StopFlag":
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def ema_decay_at(decay: float, step: int) -> float:
    """Warm-up: early on the average follows the net closely ((1 + step) / (10 + step)),
    so a short run's EMA is not dominated by the random initialisation."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    for e, s in zip(ema.parameters(), source.parameters()):
        e.lerp_(s.detach(), 1.0 - decay)
    for e, s in zip(ema.buffers(), source.buffers()):
        e.copy_(s)


def train(
    task: TrainTask,
    *,
    steps: int,                          # total optimisation steps (a resumed run continues up to this)
    device: torch.device,
    config: dict[str, Any] | None = None,  # the resolved config, stored in every checkpoint
    run_dir: Path | None = None,
    seed: int = 0,
    accumulate: int = 1,                 # micro-batches whose gradients are summed before each update
    amp: str | None = None,              # None, "bf16" or "fp16"; CUDA only
    ema_decay: float = 0.999,            # EMA of the nets named in task.ema
    resume: dict[str, Any] | None = None,  # a loaded checkpoint to continue from
    observers: Sequence[Observer] = (),
    dist: DistInfo | None = None,
) -> TrainState:
    """Run ``task`` for ``steps`` steps and return the final state.

    Each step draws ``accumulate`` micro-batches, then runs the task's phases in
    order; each phase zeroes its optimiser, back-propagates every micro-batch's
    loss, averages gradients across ranks, and steps. Ctrl-C (SIGINT) stops
    after the step in flight, so the checkpoint observer saves a consistent,
    resumable state, and ``state.status`` is ``"interrupted"``; a second Ctrl-C
    aborts at once.
    """
    dist = dist or DistInfo()
    seed_everything(seed, dist.rank)
    for net in task.nets.values():
        net.to(device)
        broadcast_parameters(net)
    state = TrainState(task=task, total_steps=steps, device=device, config=config or {}, run_dir=run_dir, dist=dist)
    state.ema_nets = {name: copy.deepcopy(task.nets[src]).requires_grad_(False).eval() for name, src in task.ema.items()}
    state.scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16" and device.type == "cuda"))
    if resume is not None:
        state.restore(resume)
        if dist.enabled:  # the checkpoint holds rank 0's RNG; give each rank its own stream again
            seed_everything(seed + state.step, dist.rank)

    trainable = {name: [p for p in net.parameters()] for name, net in task.nets.items()}
    requires = {name: [p.requires_grad for p in params] for name, params in trainable.items()}
    batches = iter(task.data)

    status = "failed"
    for obs in observers:
        obs.on_train_start(state)
    try:
        with _StopFlag() as stop:
            while state.step < steps and not stop.requested:
                micro = [task.to_device(next(batches), device) for _ in range(accumulate)]
                terms: dict[str, torch.Tensor] = {}
                for phase in task.phases:
                    if state.step % phase.every:
                        continue
                    for name, params in trainable.items():  # train only this phase's nets
                        for p, req in zip(params, requires[name]):
                            p.requires_grad_(req and name in phase.nets)
                    optimizer = task.optimizers[phase.optimizer]
                    optimizer.zero_grad(set_to_none=True)
                    for batch in micro:
                        with _amp_context(device, amp):
                            out = task.loss(phase.name, batch, state.step)
                        state.scaler.scale(out["loss"] / accumulate).backward()
                        for key, value in out.items():
                            name = f"{phase.name}/{key}"
                            terms[name] = terms.get(name, 0.0) + value.detach().float() / accumulate
                    all_reduce_gradients([p for n in phase.nets for p in trainable[n]])
                    state.scaler.step(optimizer)
                state.scaler.update()
                for sched in task.schedulers.values():
                    sched.step()
                for ema_name, src in task.ema.items():
                    update_ema(state.ema_nets[ema_name], task.nets[src], ema_decay_at(ema_decay, state.step))
                state.step += 1
                for obs in observers:
                    obs.on_step_end(state, terms)
            status = "interrupted" if stop.requested else "completed"
    except KeyboardInterrupt:
        status = "failed"  # a second Ctrl-C: the step in flight was abandoned
        raise
    finally:
        for name, params in trainable.items():
            for p, req in zip(params, requires[name]):
                p.requires_grad_(req)
        for obs in observers:
            obs.on_train_end(state, status)
    state.status = status
    return state
