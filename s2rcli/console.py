"""One rich console for the whole program, plus the global CLI settings."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

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
