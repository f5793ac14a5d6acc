"""Run folders: the frozen config, and metrics appended as JSON lines."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..console import warn
from ..errors import S2RError
from ..utils.atomic import atomic_write_json, atomic_write_text
from .loop import Observer, TrainState


def write_config(run_dir: Path, config: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Freeze the resolved config to ``RUN/config.json`` before step 0."""
    return atomic_write_json(Path(run_dir) / "config.json", config, overwrite=overwrite)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise S2RError(f"no config.json in {run_dir}", hint="is this an s2r run folder?") from exc
    except json.JSONDecodeError as exc:
        raise S2RError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object a line, flushed each write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        """The records, in file order.

        A run killed while appending can leave a half-written last line: it is dropped with a
        warning naming the file and line. A damaged line anywhere else is an :class:`S2RError`
        naming them: only a torn tail is repaired.
        """
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise S2RError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        lines = text.splitlines()
        last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
        records = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if n == last:
                    warn(f"{self.path} line {n + 1} is half-written (the run was stopped while logging); "
                         "dropped it")
                    break
                raise S2RError(f"{self.path} line {n + 1} is not a metrics record ({exc})",
                               hint="delete that line (or the file: the run's checkpoints do not depend on it)") from None
            records.append(record)
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only the records up to ``step``, one per step (a resumed run writes the rest again).

        A torn last line is dropped (see :meth:`read`); if a step was logged twice, its last record wins.
        """
        by_step: dict[int, dict[str, Any]] = {}
        for record in self.read():
            at = int(record.get("step", 0))
            if at <= step:
                by_step.pop(at, None)
                by_step[at] = record
        atomic_write_json_lines(self.path, sorted(by_step.values(), key=lambda r: int(r.get("step", 0))))


def atomic_write_json_lines(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


class MetricsObserver(Observer):
    """Averages the loop's named terms over ``every`` steps and appends them.

    The terms are summed as tensors on the training device; they are read (one host sync) only when
    a record is written, every ``every`` steps.
    """

    def __init__(self, run_dir: Path, every: int = 10):
        self.log = MetricsLog(Path(run_dir) / "metrics.jsonl")
        self.every = max(1, int(every))
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._t0 = time.perf_counter()

    def on_train_start(self, state: TrainState) -> None:
        if state.dist.is_main:
            self.log.truncate_after(state.step)
        self._t0 = time.perf_counter()

    def on_step_end(self, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        if state.step % self.every == 0 or state.step == state.total_steps:
            self.flush(state)

    def flush(self, state: TrainState) -> None:
        if not self._count:
            return
        # The one host sync of the interval: the terms stay tensors on the device until here. Read them
        # before the clock, so the time covers the device work of these steps, not only their launch.
        values = {key: float(value) / self._count for key, value in self._sums.items()}
        elapsed = time.perf_counter() - self._t0
        record: dict[str, Any] = {"step": state.step, "sec_per_step": elapsed / self._count}
        for key, v in values.items():
            record[key] = v if math.isfinite(v) else str(v)
        if state.dist.is_main:
            self.log.append(record)
        self._sums, self._count, self._t0 = {}, 0, time.perf_counter()

    def on_train_end(self, state: TrainState, status: str) -> None:
        self.flush(state)
