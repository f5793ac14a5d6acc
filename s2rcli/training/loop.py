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
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..checkpoint import capture_rng_state, make_checkpoint, restore_rng_state
from ..console import warn
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


def _amp_context(device: torch.device, amp: str | None, cpu_bf16: bool = False):
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if not amp or device.type != "cuda":  # --amp is a CUDA feature; CPU bf16 is FastPath.cpu_bf16
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# --- the fast path -------------------------------------------------------------------------------

OPTIMIZER_IMPLS = ("foreach", "fused", "for-loop")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): there oneDNN's bf16
    convolutions run about twice as fast as fp32; elsewhere bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class FastPath:
    """How the loop runs a step; none of it changes what a step computes, only how.

    * ``channels_last``: the networks in NHWC memory format.
    * ``compile``: ``torch.compile`` of each phase's loss (forward and backward), in ``compile_mode``;
      if compiling is unavailable or fails, one line says so and the run goes on eagerly.
    * ``cpu_bf16``: bf16 autocast of the loss on CPU (CUDA uses ``amp``); weights, gradients and
      optimiser state stay fp32.
    * ``optimizer``: ``foreach`` or ``fused`` optimiser kernels where the optimiser has them
      (``for-loop``: one tensor at a time; ``None``: the optimiser's own choice).

    Bit-identical to the plain eager fp32 loop: ``foreach`` (on CPU). Equal to it within
    floating-point tolerance only: ``channels_last`` (other convolution kernels), ``fused``,
    ``compile`` (fused kernels) and ``cpu_bf16`` (bf16 arithmetic, about 3 significant digits).
    Within one setting every run is deterministic, so resume stays exact.
    """

    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    cpu_bf16: bool = False
    optimizer: str | None = None

    @classmethod
    def resolve(cls, train_cfg: Mapping[str, Any], device: torch.device) -> "FastPath":
        """The fast path of a run config's ``train`` section on ``device``.

        ``None`` means automatic: ``cpu_bf16`` on a CPU with native bf16; ``channels_last`` on CUDA
        (on CPU it did not pay: docs/performance.md); ``optimizer`` foreach on CPU, fused on CUDA. A
        key the config does not have (a run started before these options existed) is off, so such a
        run resumes exactly as it began.
        """
        cuda = device.type == "cuda"
        bf16 = train_cfg.get("cpu_bf16", False)
        bf16 = cpu_has_native_bf16() if bf16 is None else bool(bf16)
        bf16 = bf16 and device.type == "cpu"
        channels_last = train_cfg.get("channels_last", False)
        if channels_last is None:  # CPU: measured 0.95-1.04x for fp32 training, slower under bf16
            channels_last = cuda
        impl = train_cfg.get("optimizer_impl", "keep")
        if impl is None:
            impl = "fused" if cuda else "foreach"
        elif impl == "keep":  # the optimiser's own default, as before these options existed
            impl = None
        return cls(channels_last=bool(channels_last), compile=bool(train_cfg.get("compile", False)),
                   compile_mode=str(train_cfg.get("compile_mode") or "default"), cpu_bf16=bf16, optimizer=impl)

    def describe(self) -> str:
        parts = [name for name, on in (("channels_last", self.channels_last), ("cpu_bf16", self.cpu_bf16),
                                       ("compile", self.compile)) if on]
        if self.optimizer:
            parts.append(f"{self.optimizer} optimiser")
        return ", ".join(parts) or "eager"


def set_optimizer_impl(optimizer: torch.optim.Optimizer, impl: str | None) -> bool:
    """Switch ``optimizer`` to ``foreach``/``fused``/``for-loop`` kernels in place (the schedulers keep
    their reference to it). Only optimisers that have the option change; returns whether it did."""
    if impl is None:
        return False
    defaults = optimizer.defaults
    if "foreach" not in defaults:
        return False
    fused = impl == "fused"
    if fused and "fused" not in defaults:
        fused, impl = False, "foreach"  # no fused kernel: the next best
    if fused and any(p.device.type not in ("cuda", "cpu") or not torch.is_floating_point(p)
                     for group in optimizer.param_groups for p in group["params"]):
        fused, impl = False, "foreach"
    for group in [defaults, *optimizer.param_groups]:
        group["foreach"] = impl == "foreach"
        if "fused" in defaults:
            group["fused"] = fused
    return True


class _CompiledLoss:
    """``torch.compile`` of ``task.loss``, one graph per phase; if compiling fails (no compiler,
    an unsupported operation), says so once and computes eagerly from then on."""

    def __init__(self, loss: Callable[..., dict[str, torch.Tensor]], mode: str):
        self.eager = loss
        self.failed = False
        self.ready: set[str] = set()
        try:
            import torch._inductor.config as inductor_config  # optional part of torch: only --compile needs it

            inductor_config.fallback_random = True  # the same random numbers as eager (code noise, dropout)
            self.compiled = torch.compile(loss, mode=None if mode == "default" else mode)
        except Exception as exc:  # noqa: BLE001 - any failure to set up means: run eagerly
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        self.failed = True
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        warn(f"torch.compile is unavailable here ({type(exc).__name__}: {reason}); training eagerly")

    def __call__(self, phase: str, *args):
        if self.failed:
            return self.eager(phase, *args)
        first = phase not in self.ready
        rng = capture_rng_state() if first else None  # compiling draws no random numbers, but be sure
        try:
            out = self.compiled(phase, *args)
        except Exception as exc:  # noqa: BLE001 - a compile failure surfaces at the first call of a phase
            if rng is not None:
                restore_rng_state(rng)
            self._fall_back(exc)
            return self.eager(phase, *args)  # a genuine error in the loss raises again here
        self.ready.add(phase)
        return out


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
    fast: FastPath | None = None,          # memory format, compile, CPU bf16, optimiser kernels (default: none)
) -> TrainState:
    """Run ``task`` for ``steps`` steps and return the final state.

    Each step draws ``accumulate`` micro-batches, then runs the task's phases in
    order; each phase zeroes its optimiser, back-propagates every micro-batch's
    loss, averages gradients across ranks, and steps. Ctrl-C (SIGINT) stops
    after the step in flight, so the checkpoint observer saves a consistent,
    resumable state, and ``state.status`` is ``"interrupted"``; a second Ctrl-C
    aborts at once. ``fast`` (:class:`FastPath`) says how to run a step faster.
    """
    dist = dist or DistInfo()
    fast = fast or FastPath()
    seed_everything(seed, dist.rank)
    for net in task.nets.values():
        net.to(device)
        if fast.channels_last:
            net.to(memory_format=torch.channels_last)
        broadcast_parameters(net)
    state = TrainState(task=task, total_steps=steps, device=device, config=config or {}, run_dir=run_dir, dist=dist)
    state.ema_nets = {name: copy.deepcopy(task.nets[src]).requires_grad_(False).eval() for name, src in task.ema.items()}
    state.scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16" and device.type == "cuda"))
    if resume is not None:
        state.restore(resume)
        if dist.enabled:  # the checkpoint holds rank 0's RNG; give each rank its own stream again
            seed_everything(seed + state.step, dist.rank)
    for optimizer in task.optimizers.values():  # after restoring: a checkpoint's param groups carry the flags too
        set_optimizer_impl(optimizer, fast.optimizer)
    loss_fn = _CompiledLoss(task.loss, fast.compile_mode) if fast.compile else task.loss

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
                        with _amp_context(device, amp, fast.cpu_bf16):
                            out = loss_fn(phase.name, batch, state.step)
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
