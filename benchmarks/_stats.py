"""Mean ± spread formatting shared by the benchmark scripts."""

from __future__ import annotations

import math


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation, ignoring missing values (NaN when undefined)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return m, sd


def fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± sd (each value)``, scaled (e.g. 100 for percentages); a single value prints alone."""
    if not values:
        return "—"
    m, sd = mean_sd(values)
    spread = f" ± {scale * sd:.{digits}f}" if not math.isnan(sd) else ""
    each = ", ".join(f"{scale * v:.{digits}f}" for v in values)
    return f"{scale * m:.{digits}f}{spread} ({each})" if len(values) > 1 else f"{scale * m:.{digits}f}"
