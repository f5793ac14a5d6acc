"""How many CPU threads torch uses: ``--threads`` of ``s2r train`` and ``s2r translate``.

torch starts one intra-op thread per logical CPU. On a machine shared with other jobs that
oversubscribes the cores: two runs on a shared 2-core machine took 14-18 s a step with 2
threads each, against under 1 s with 1 thread. So the default is the physical cores that are
free, by this rule:

1. the CPUs this process may run on (``os.sched_getaffinity``; else ``os.cpu_count()``);
2. counted as physical cores where Linux tells which CPUs are hyper-thread siblings
   (``/sys/devices/system/cpu/cpuN/topology/thread_siblings_list``);
3. minus the 1-minute load average, rounded (the cores other work keeps busy);
4. at least 1.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import torch

from ..errors import S2RError

_TOPOLOGY = Path("/sys/devices/system/cpu")


def _cpu_list(text: str) -> set[int]:
    """``"0-3,8,10-11"`` -> {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def usable_cpus() -> set[int]:
    """The logical CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int], topology: Path = _TOPOLOGY) -> int:
    """How many physical cores ``cpus`` spread over: hyper-thread siblings count once.
    Where the topology cannot be read, every CPU counts as a core."""
    cores: set[frozenset[int]] = set()
    for cpu in cpus:
        try:
            siblings = _cpu_list((topology / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text())
        except (OSError, ValueError):
            return len(cpus)
        cores.add(frozenset(siblings & cpus) or frozenset({cpu}))
    return len(cores)


def load_average() -> float:
    """The 1-minute load average (0 where the system has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def default_threads(cpus: set[int] | None = None, load: float | None = None, topology: Path = _TOPOLOGY) -> int:
    """The free physical cores: usable CPUs as physical cores, minus the rounded load average, at least 1."""
    cpus = usable_cpus() if cpus is None else cpus
    load = load_average() if load is None else load
    return max(1, physical_cores(cpus, topology) - int(round(load)))


THREADS_HELP = ("CPU threads for torch (torch.set_num_threads). Default: the physical cores that are free: the CPUs "
                "this process may use (sched_getaffinity), hyper-thread siblings counted once, minus the 1-minute "
                "load average rounded, at least 1. Oversubscribed cores make every thread wait: on a shared machine "
                "1 thread can be 10x faster than 2.")
"""The ``--threads`` help text, shared by the commands that take it."""


def resolve_threads(threads: int | None) -> int:
    """``--threads N`` as given, or :func:`default_threads` for None; refuses N < 1."""
    if threads is None:
        return default_threads()
    if int(threads) < 1:
        raise S2RError(f"--threads {threads}: at least 1 thread is needed", hint="omit --threads for the default")
    return int(threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(resolve_threads(threads))``; the previous count is
    restored afterwards (so a command called in-process leaves the caller's setting alone)."""
    n = resolve_threads(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
