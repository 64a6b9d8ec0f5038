"""The speed figure (Huang, Du & Xu, Fig. 4, on digits), drawn from saved records of run_speed.

One panel per net shape (L, m), the shapes at one width (depth varying)
first, then those at one depth: tau against eta (log-log), the median over
seeds as a line, each seed as a faint point, Gaussian solid, orthogonal
dashed. A rate at which the median seed never reaches the threshold is
drawn on the "never" row above the step cap, so stalled and diverged nets
show instead of vanishing. Built on matplotlib's object API with the Agg
canvas (no pyplot), saved as PNG and PDF.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from .experiments.speed import median_tau, shared_settings

INIT_STYLES = {"gaussian": ("C1", "-", "o", "Gaussian"), "orthogonal": ("C0", "--", "s", "orthogonal")}
FORMATS = ("png", "pdf")
_NEVER_FACTOR = 2.0  # the "never" row sits this many times above the step cap


def _shapes_in_panel_order(records):
    """Shapes (depth, width): those sharing the commonest width (depth varies), then the rest."""
    shapes = sorted({(r["config"]["depth"], r["config"]["width"]) for r in records})
    widths = [w for _, w in shapes]
    common = max(set(widths), key=widths.count)
    return [s for s in shapes if s[1] == common] + [s for s in shapes if s[1] != common]


def speed_figure(records, stem) -> list[Path]:
    """tau vs eta per shape and init (module docstring); returns the files written (``stem`` + .png/.pdf)."""
    records = list(records)
    if not records:
        raise ValueError("no records to draw")
    settings = shared_settings(records)
    shapes = _shapes_in_panel_order(records)
    cap, threshold = settings["max_steps"], settings["threshold"]
    never = cap * _NEVER_FACTOR
    cols = min(4, len(shapes))
    rows = math.ceil(len(shapes) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, (depth, width) in zip(axes.flat, shapes):
        for init, (colour, style, marker, label) in INIT_STYLES.items():
            mine = [r for r in records if r["config"]["init"] == init
                    and (r["config"]["depth"], r["config"]["width"]) == (depth, width)]
            if not mine:
                continue
            by_lr: dict = {}
            for r in mine:
                by_lr.setdefault(r["config"]["lr"], []).append(r["tau"])
            lrs = np.array(sorted(by_lr))
            medians = np.array([median_tau(by_lr[lr]) for lr in lrs])
            # tau = 0 (the init already at the threshold) sits at 1 on the log axis
            shown = np.where(np.isfinite(medians), np.maximum(medians, 1), never)
            ax.plot(lrs, shown, color=colour, linestyle=style, marker=marker, markersize=4, label=label)
            seeds_x = [lr for lr in lrs for t in by_lr[lr]]
            seeds_y = [never if t is None else max(t, 1) for lr in lrs for t in by_lr[lr]]
            ax.scatter(seeds_x, seeds_y, color=colour, alpha=0.25, s=10, marker=marker, linewidths=0)
        ax.axhline(cap, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"L = {depth}, m = {width}", fontsize=10)
        ax.set_xlabel("learning rate $\\eta$")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"$\\tau$ (first step at train acc $\\geq$ {threshold:g})")
    top = axes[0, 0]
    ticks = [t for t in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if t <= cap]
    top.set_yticks(ticks + [never], [str(t) for t in ticks] + ["never"])
    top.set_ylim(0.7, never * 1.4)
    top.yaxis.set_minor_locator(NullLocator())
    for ax in axes.flat[len(shapes):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Training speed on digits (tanh, $\\sigma_w^2$ = {settings['sigma_w2']:g}, "
                 f"batch {settings['batch_size']})\n"
                 f"step cap {cap}; median over seeds (line), seeds (points)", fontsize=10)
    return _save(fig, stem)


def _save(fig: Figure, stem) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150)
        paths.append(path)
    return paths
