"""One rich console for the whole program, the global CLI settings, and progress bars."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

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
    if not settings.quiet:
        console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


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


def track(iterable: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate with a throttled progress bar (nothing under ``--quiet``); stops cleanly on Ctrl-C."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    progress = make_progress()
    last = 0.0
    with progress:
        task_id = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task_id)
            now = time.monotonic()
            if now - last > 0.2:
                progress.refresh()
                last = now
        progress.refresh()
