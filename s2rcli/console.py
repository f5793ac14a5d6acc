"""One rich console for the whole program, the global CLI settings, and progress bars."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
"""Human-facing messages and progress go to stderr, so stdout stays clean for JSON."""

stdout = Console(highlight=False, soft_wrap=True)
"""Results (tables, JSON) go to stdout."""


@dataclass
class Settings:
    verbose: bool = False
    quiet: bool = False
    device: str = "auto"


settings = Settings()


def info(message: str) -> None:
    """A progress note on stderr (not under ``--quiet``), one logical line: soft-wrapped, so the
    terminal folds it and a log or pipe keeps it whole instead of breaking it at 80 columns."""
    if not settings.quiet:
        console.print(message, soft_wrap=True)


def warn(message: str) -> None:
    """A warning on stderr, always shown, soft-wrapped like :func:`info`."""
    console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def make_progress(*extra_columns) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=console,
        auto_refresh=False,
        disable=settings.quiet,
        transient=False,
    )


@contextlib.contextmanager
def progress_bar(total: float | None, description: str = "working") -> Iterator[Callable[[float], None]]:
    """A throttled progress bar advanced by hand (nothing under ``--quiet``).

    Yields ``advance(amount=1)``; amounts may be fractions, so one long item can move the bar
    (and its elapsed and remaining times) part by part, e.g. tile by tile.
    """
    progress = make_progress()
    last = 0.0
    with progress:
        task_id = progress.add_task(description, total=total)

        def advance(amount: float = 1) -> None:
            nonlocal last
            progress.advance(task_id, amount)
            now = time.monotonic()
            if now - last > 0.2:
                progress.refresh()
                last = now

        yield advance
        progress.refresh()


def track(iterable: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate with a throttled progress bar (nothing under ``--quiet``); stops cleanly on Ctrl-C."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(total, description) as advance:
        for item in iterable:
            yield item
            advance()
