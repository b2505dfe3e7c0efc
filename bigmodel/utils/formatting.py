"""How numbers are written in summaries, tables and figures: ``81.2 ± 0.5 (n=3)``, ``5.45M``, ``3.2 min``. One
home, so a sweep's summary, the results table and the results chart agree to the digit."""

from __future__ import annotations

from typing import Any


def _decimals(value: float) -> int:
    return 4 if abs(value) < 10 else 2


def format_value(value: float | None) -> str:
    return "–" if value is None else f"{value:.{_decimals(value)}f}"


def mean_std(stats: dict[str, Any], scale: float = 1.0, digits: int | None = None) -> str:
    """``0.8123 ± 0.0051 (n=3)``; with ``scale`` 100 and ``digits`` 1, ``81.2 ± 0.5 (n=3)``; both numbers to the
    same decimal place."""
    mean, std = stats["mean"] * scale, stats["std"]
    places = digits if digits is not None else _decimals(mean)
    spread = "–" if std is None else f"{std * scale:.{places}f}"
    return f"{mean:.{places}f} ± {spread} (n={stats['n']})"


def count(n: int) -> str:
    """``5.45M``, ``130.2k``, ``812``: a parameter count at a glance."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def share(part: int, whole: int) -> str:
    """``19 %``, ``0.00341 %``: three significant digits, so a linear probe's few trained weights do not read 0."""
    return f"{100 * part / max(whole, 1):.3g} %"


def trained_parameters(point: dict[str, Any]) -> str:
    """``1.03M / 5.45M (19 %)``; ``0 / 5.58M (no fit)`` for a sweep that only tested; empty when not recorded."""
    params = point.get("parameters")
    if not params:
        return ""
    trained = params["trainable"] if point.get("fitted", True) else 0
    part = share(trained, params["total"]) if trained else "no fit"
    return f"{count(trained)} / {count(params['total'])} ({part})"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
