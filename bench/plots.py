"""Small matplotlib helpers the parts draw their PNGs with (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib  # type: ignore[import-not-found,unused-ignore]  # the bench extra

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

__all__ = ["bars", "figure", "save"]

OURS, BASELINE = "#1f77b4", "#999999"


def figure(columns: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    """A figure with ``columns`` side-by-side axes."""
    fig, axes = plt.subplots(1, columns, figsize=(width * columns, height), squeeze=False)
    return fig, list(axes[0])


def bars(
    ax: Any,
    labels: Sequence[str],
    ours: Sequence[float],
    baseline: Sequence[float],
    *,
    ours_label: str,
    baseline_label: str,
    unit: str,
    title: str,
    log: bool = False,
) -> None:
    """Pairs of bars, ours beside the baseline, with the ratio written above each pair
    and each value on its bar (``log``: a logarithmic axis, for very unequal pairs)."""
    xs = range(len(labels))
    width = 0.38
    for offset, values, label, color in (
        (-width / 2, ours, ours_label, OURS),
        (width / 2, baseline, baseline_label, BASELINE),
    ):
        drawn = ax.bar([x + offset for x in xs], values, width, label=label, color=color)
        ax.bar_label(drawn, labels=[_short(v) for v in values], fontsize=7, label_type="center")
    for x, a, b in zip(xs, ours, baseline, strict=True):
        if b:
            ax.annotate(
                f"{a / b:.2f}x",
                (x, max(a, b)),
                ha="center",
                va="bottom",
                fontsize=9,
                xytext=(0, 3),
                textcoords="offset points",
            )
    if log:
        ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2g}"


def save(fig: Any, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
