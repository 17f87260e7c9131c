"""Plots for the benchmarks: matplotlib without pyplot, so no GUI backend and no global state."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DPI = 100
MAX_POINTS = 1_000


def latency_cdfs(
    path: Path,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str,
    columns: int = 2,
) -> None:
    """Write a PNG: one CDF subplot per panel, one line per series (latencies in ms, log x).

    A series keeps its colour in every panel; one legend below the panels names them.
    """
    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(5.0 * columns, 3.6 * rows), dpi=DPI, layout="constrained")
    figure.suptitle(title)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (panel, series) in zip(axes, panels.items(), strict=False):
        for label, values in series.items():
            ordered = sorted(v for v in values if v > 0)  # a log axis cannot show 0
            if not ordered:
                continue
            # At most MAX_POINTS points a line, the last one kept: the PNG stays small.
            picked = [*range(0, len(ordered), math.ceil(len(ordered) / MAX_POINTS))]
            if picked[-1] != len(ordered) - 1:
                picked.append(len(ordered) - 1)
            xs = [ordered[i] for i in picked]
            fractions = [(i + 1) / len(ordered) for i in picked]
            ax.step(xs, fractions, where="post", color=colours[label], linewidth=1.2)
        ax.set_xscale("log")
        low, high = ax.get_xlim()
        # Plain numbers (labels like 2x10^0 overlap), 1-2-5 steps while they fit.
        ax.xaxis.set_major_locator(LogLocator(subs=ticks_per_decade(math.log10(high / low))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: plain(value)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0.0, 1.005)
        for level in (0.5, 0.99):
            ax.axhline(level, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(panel, fontsize="medium")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction delivered within")
        ax.grid(visible=True, which="major", linewidth=0.4, alpha=0.5)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[name], label=name) for name in names]
    figure.legend(handles=handles, loc="outside lower center", ncols=max(1, len(names)))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)


def ticks_per_decade(decades: float) -> tuple[float, ...]:
    """Where in each decade a labelled tick goes, fewer the more decades the axis spans."""
    if decades <= 2.5:
        return (1.0, 2.0, 5.0)
    if decades <= 4.0:
        return (1.0, 3.0)
    return (1.0,)


def plain(value: float) -> str:
    """``0.5``, ``20``, ``10k``: a short tick label without exponents."""
    return f"{value / 1000:,g}k" if value >= 1000 else f"{value:g}"
