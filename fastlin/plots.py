"""Figures 1 and 2 of Hu, Xiao & Pennington (ICLR 2020), drawn from a saved result store.

Nothing here trains: every figure is a function of the records in a
:class:`~fastlin.experiments.store.ResultStore` and the grid saved with them,
so ``fastlin plot DIR`` redraws them at any time. Figures are built on
matplotlib's object API with the Agg canvas (no pyplot, no global backend
change), and saved as PNG and PDF.

* Figure 1: heat maps of log10(loss(t)/loss(0)) over x = log10 width m and
  y = log10 depth L, one per init and read-out step t, one shared colour bar,
  with the critical widths m*(L) and the fitted line log m* = s log L + c.
* Figure 2: loss(t)/loss(0) against t (log-log) at three depths, one curve
  per width coloured by width, Gaussian solid, orthogonal dashed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps, colors, ticker
from matplotlib.cm import ScalarMappable
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .experiments.analysis import (critical_widths, figure1_summary, fit_slope, relative_loss_at,
                                   write_summary)
from .experiments.grid import Grid
from .experiments.store import ResultStore, RunRecord

INIT_LABELS = {"gaussian": "Gaussian", "orthogonal": "orthogonal"}
INIT_STYLES = {"gaussian": "-", "orthogonal": "--"}
FORMATS = ("png", "pdf")
# Colour range of Figure 1 in log10(loss(t)/loss(0)); values outside are clipped
# (colour bar arrows). Below -12 a float64 run has converged for any purpose.
LOG_REL_FLOOR = -12.0
LOG_REL_CEIL = 1.0
DIVERGED_COLOUR = "0.75"
_FIGURE2_TOP = 10.0  # upper limit of Figure 2's loss axis
FIGURE2_MAX_WIDTHS = 6  # more curves per panel are unreadable


def _save(fig: Figure, stem) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _edges(log_values: np.ndarray) -> np.ndarray:
    """Cell edges around (not necessarily evenly spaced) cell centres."""
    if len(log_values) == 1:
        return np.array([log_values[0] - 0.1, log_values[0] + 0.1])
    mid = (log_values[1:] + log_values[:-1]) / 2
    return np.concatenate([[2 * log_values[0] - mid[0]], mid, [2 * log_values[-1] - mid[-1]]])


def figure1(grid: Grid, records: list[RunRecord], stem, *, threshold: float | None = None) -> list[Path]:
    """Heat maps of log10(loss(t)/loss(0)) (init x read-out step); returns the files written."""
    threshold = grid.threshold if threshold is None else threshold
    inits = [i for i in grid.inits if any(r.config.init == i for r in records)] or list(grid.inits)
    steps = list(grid.readout_steps)
    depths = np.array(sorted(grid.depths), dtype=float)
    widths = np.array(sorted(grid.widths), dtype=float)
    x_edges, y_edges = _edges(np.log10(widths)), _edges(np.log10(depths))

    tables = {t: relative_loss_at(records, t) for t in steps}
    finite = [math.log10(v) for table in tables.values() for v in table.values()
              if math.isfinite(v) and v > 0]
    vmin = max(LOG_REL_FLOOR, math.floor(min(finite, default=-1.0)))
    norm = colors.Normalize(vmin=min(vmin, -1.0), vmax=LOG_REL_CEIL)
    cmap = colormaps["viridis"].with_extremes(bad=DIVERGED_COLOUR)

    fig = Figure(figsize=(4.2 * len(steps) + 1.2, 3.6 * len(inits)), layout="constrained")
    axes = fig.subplots(len(inits), len(steps), squeeze=False, sharex=True, sharey=True)
    mesh = None
    for row, init in enumerate(inits):
        for col, t in enumerate(steps):
            ax = axes[row][col]
            Z, missing = heatmap_values(tables[t], init, depths, widths)
            shown = np.ma.masked_invalid(Z)
            mesh = ax.pcolormesh(x_edges, y_edges, shown, cmap=cmap, norm=norm, shading="flat")
            if missing.any():  # not (yet) computed: white, hatched
                ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~missing, np.zeros_like(Z)),
                              cmap=colors.ListedColormap(["white"]), shading="flat", hatch="//")
            _overlay_critical(ax, records, init, t, threshold, depths)
            ax.set_title(f"{INIT_LABELS.get(init, init)} init, t = {t}")
            if row == len(inits) - 1:
                ax.set_xlabel("log10 width m")
            if col == 0:
                ax.set_ylabel("log10 depth L")
            ax.set_xlim(x_edges[0], x_edges[-1])
            ax.set_ylim(y_edges[0], y_edges[-1])
    bar = fig.colorbar(mesh, ax=axes, extend="both", shrink=0.9)
    bar.set_label("log10 loss(t) / loss(0)")
    handles = [Patch(facecolor=DIVERGED_COLOUR, label="diverged"),
               Line2D([], [], color="k", marker="o", ls="", mfc="w", label=f"m*(L): first width < {threshold:g}"),
               Line2D([], [], color="k", ls="-", label="fit log m* = s log L + c")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(f"Deep linear nets, {grid.lr.describe()}, X {grid.dx}x{grid.n}, "
                 f"Y = W*X {grid.dy}x{grid.n}")
    return _save(fig, stem)


def heatmap_values(table: dict, init: str, depths, widths):
    """(Z, missing): Z[j, k] = log10(loss(t)/loss(0)) of depth ``depths[j]``, width ``widths[k]``.

    ``table`` is :func:`~fastlin.experiments.analysis.relative_loss_at`'s
    output. Diverged runs (+inf) are NaN (drawn grey); an exact fit (0) is
    put below the colour range; ``missing`` marks configurations not in the table.
    """
    depths, widths = list(depths), list(widths)
    Z = np.full((len(depths), len(widths)), np.nan)
    missing = np.ones_like(Z, dtype=bool)
    for (i, L, m), rel in table.items():
        if i != init or L not in depths or m not in widths:
            continue
        y, x = depths.index(L), widths.index(m)
        missing[y, x] = False
        if rel == 0:
            Z[y, x] = LOG_REL_FLOOR - 1
        elif math.isfinite(rel):
            Z[y, x] = math.log10(rel)
    return Z, missing


def _overlay_critical(ax, records, init, step, threshold, depths):
    critical = critical_widths(records, step, threshold).get(init, {})
    points = [(L, m) for L, m in critical.items() if m is not None]
    if points:
        ax.plot(np.log10([m for _, m in points]), np.log10([L for L, _ in points]), "o",
                mfc="white", mec="black", ms=5, zorder=3)
    fit = fit_slope(critical)
    if math.isfinite(fit.slope):
        L = np.geomspace(depths[0], depths[-1], 50)
        ax.plot(np.log10(fit.width_at(L)), np.log10(L), "-", color="white", lw=3, zorder=3)
        ax.plot(np.log10(fit.width_at(L)), np.log10(L), "-", color="black", lw=1.5, zorder=4)
        text = f"s = {fit.slope:.2f} ({fit.points} depths)"
    else:
        text = f"no fit ({fit.points} depths with m*)"
    ax.text(0.97, 0.04, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})


def figure2_depths(grid: Grid) -> list[int]:
    """The grid's Figure 2 depths, or the smallest, middle and largest depth."""
    if grid.figure2_depths:
        return list(grid.figure2_depths)
    depths = sorted(grid.depths)
    return sorted({depths[0], depths[len(depths) // 2], depths[-1]})


def figure2_widths(widths, most: int = FIGURE2_MAX_WIDTHS) -> list[int]:
    """At most ``most`` widths spread evenly (in log) over ``widths``, ends included."""
    widths = sorted(widths)
    if len(widths) <= most:
        return widths
    picks = np.unique(np.round(np.linspace(0, len(widths) - 1, most)).astype(int))
    return [widths[k] for k in picks]


def figure2(grid: Grid, records: list[RunRecord], stem, *, depths=None) -> list[Path]:
    """Relative loss against step (log-log) at three depths; returns the files written."""
    depths = figure2_depths(grid) if depths is None else list(depths)
    widths = figure2_widths(sorted({r.config.width for r in records} or grid.widths))
    records = [r for r in records if r.config.width in widths]
    norm = colors.LogNorm(vmin=min(widths), vmax=max(widths) if max(widths) > min(widths) else min(widths) * 2)
    # plasma without its pale yellow end, which vanishes on white
    cmap = colors.ListedColormap(colormaps["plasma"](np.linspace(0.0, 0.85, 256)))
    fig = Figure(figsize=(4.3 * len(depths) + 1.0, 4.6), layout="constrained")
    axes = fig.subplots(1, len(depths), squeeze=False, sharey=True)[0]
    floor = 1.0
    for ax, L in zip(axes, depths):
        for r in sorted(records, key=lambda r: (r.config.init, r.config.width, r.config.seed)):
            c = r.config
            if c.depth != L:
                continue
            # Draw the steps actually run: after convergence the stored loss only repeats.
            t = np.arange(1, r.steps_run + 1)
            rel = r.relative_loss[1:r.steps_run + 1]
            ok = np.isfinite(rel) & (rel > 0)
            if ok.any():
                floor = min(floor, float(rel[ok].min()))
            ax.loglog(t[ok], rel[ok], INIT_STYLES.get(c.init, ":"), color=cmap(norm(c.width)),
                      lw=1.3, alpha=0.9)
            if r.status == "diverged":  # mark where it left: at the last finite loss, clipped
                t_end, rel_end = (t[ok][-1], rel[ok][-1]) if ok.any() else (1, 1.0)
                ax.plot([t_end], [min(rel_end, _FIGURE2_TOP)], "x", color=cmap(norm(c.width)),
                        ms=7, mew=2, clip_on=False, zorder=3)
        ax.set_title(f"depth L = {L}")
        ax.set_xlabel("GD step t")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("loss(t) / loss(0)")
    axes[0].set_ylim(max(floor, 1e-20) / 3, _FIGURE2_TOP)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), shrink=0.9)
    bar.set_label("width m")
    bar.ax.yaxis.set_minor_locator(ticker.NullLocator())
    bar.set_ticks(widths, labels=[str(m) for m in widths])
    handles = [Line2D([], [], color="k", ls=INIT_STYLES[i], label=f"{INIT_LABELS[i]} init")
               for i in grid.inits if i in INIT_STYLES]
    handles.append(Line2D([], [], color="k", marker="x", ls="", label="diverged"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(f"Relative training loss, {grid.lr.describe()}")
    return _save(fig, stem)


def plot_store(directory, *, figures=("figure1", "figure2")) -> dict:
    """Redraw the figures (and ``figure1_summary.json``) of a result store.

    Returns {"figure1": [paths], "figure2": [paths], "summary": path, "summary_data": dict}.
    """
    store = ResultStore(directory)
    grid = store.load_grid_spec()
    records = store.load_grid(grid)
    if not records:
        raise ValueError(f"{store.root} holds no finished configuration of its grid yet")
    out = {}
    if "figure1" in figures:
        summary = figure1_summary(grid, records)
        out["summary"] = write_summary(summary, store.root / "figure1_summary.json")
        out["summary_data"] = summary
        out["figure1"] = figure1(grid, records, store.root / "figure1")
    if "figure2" in figures:
        out["figure2"] = figure2(grid, records, store.root / "figure2")
    return out
