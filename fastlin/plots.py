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

A configuration of the grid without a whole record (not run yet, failed,
or damaged) is never left out silently: Figure 1 hatches its cell (white
where no seed of it has a record), Figure 2 marks it with a hollow circle
at t = 1 and names it in its panel, both say how many in the title and the
legend, and ``figure1_summary.json`` lists it under ``missing``. Files are
written atomically, so two processes drawing the same store leave whole files.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps, colors, ticker
from matplotlib.cm import ScalarMappable
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .experiments.analysis import (critical_widths, figure1_summary, fit_slope, grid_holes, relative_loss_at,
                                   write_summary)
from .experiments.grid import Grid
from .experiments.integrity import NAMED_HOLES, atomic_write_bytes, missing_entries
from .experiments.store import ResultStore, RunRecord, hole_fields

INIT_LABELS = {"gaussian": "Gaussian", "orthogonal": "orthogonal"}
INIT_STYLES = {"gaussian": "-", "orthogonal": "--"}
FORMATS = ("png", "pdf")
# Colour range of Figure 1 in log10(loss(t)/loss(0)); values outside are clipped
# (colour bar arrows). Below -12 a float64 run has converged for any purpose.
LOG_REL_FLOOR = -12.0
LOG_REL_CEIL = 1.0
DIVERGED_COLOUR = "0.75"
MISSING_COLOUR = "tab:red"  # hatching of Figure 1's cells and circles of Figure 2 without a record
_FIGURE2_TOP = 10.0  # upper limit of Figure 2's loss axis
FIGURE2_MAX_WIDTHS = 6  # more curves per panel are unreadable


def save_figure(fig: Figure, stem, formats=None) -> list[Path]:
    """Write ``fig`` as ``stem``.png, .pdf (``formats``, default FORMATS), each file atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for ext in FORMATS if formats is None else formats:
        path = stem.with_suffix(f".{ext}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def _edges(log_values: np.ndarray) -> np.ndarray:
    """Cell edges around (not necessarily evenly spaced) cell centres."""
    if len(log_values) == 1:
        return np.array([log_values[0] - 0.1, log_values[0] + 0.1])
    mid = (log_values[1:] + log_values[:-1]) / 2
    return np.concatenate([[2 * log_values[0] - mid[0]], mid, [2 * log_values[-1] - mid[-1]]])


def figure1(grid: Grid, records: list[RunRecord], stem, *, threshold: float | None = None) -> list[Path]:
    """Heat maps of log10(loss(t)/loss(0)) (init x read-out step); returns the files written.

    Cells of configurations of ``grid`` without a record in ``records`` are
    hatched (white where no seed has one), with a legend entry.
    """
    threshold = grid.threshold if threshold is None else threshold
    holes = grid_holes(grid, records)
    inits = list(grid.inits)
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
            Z, no_value = heatmap_values(tables[t], init, depths, widths)
            shown = np.ma.masked_invalid(Z)
            mesh = ax.pcolormesh(x_edges, y_edges, shown, cmap=cmap, norm=norm, shading="flat")
            _hatch_missing(ax, x_edges, y_edges, no_value, incomplete_cells(holes, init, depths, widths))
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
    if holes:
        handles.append(Patch(facecolor="white", edgecolor=MISSING_COLOUR, hatch="//",
                             label=f"missing record ({len(holes)} configurations)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(f"Deep linear nets, {grid.lr.describe()}, X {grid.dx}x{grid.n}, "
                 f"Y = W*X {grid.dy}x{grid.n}" + _missing_note(holes, grid) + (" (hatched)" if holes else ""))
    return save_figure(fig, stem)


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


def incomplete_cells(holes, init: str, depths, widths) -> np.ndarray:
    """Boolean (depth x width) mask of the cells of ``init`` where a configuration (some seed) is in ``holes``."""
    depths, widths = list(depths), list(widths)
    mask = np.zeros((len(depths), len(widths)), dtype=bool)
    for c in holes:
        if c.init == init and c.depth in depths and c.width in widths:
            mask[depths.index(c.depth), widths.index(c.width)] = True
    return mask


def _hatch_missing(ax, x_edges, y_edges, no_value, incomplete) -> None:
    """Hatch the cells with a missing configuration; white under the hatching where no seed has a value."""
    for y, x in zip(*np.nonzero(no_value | incomplete)):
        ax.add_patch(Rectangle((x_edges[x], y_edges[y]), x_edges[x + 1] - x_edges[x], y_edges[y + 1] - y_edges[y],
                               facecolor="white" if no_value[y, x] else "none", edgecolor=MISSING_COLOUR,
                               hatch="//", lw=0, zorder=2))


def _missing_note(holes, grid: Grid) -> str:
    return f"\n{len(holes)} of {len(grid.configs())} configurations have no record" if holes else ""


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
    """Relative loss against step (log-log) at three depths; returns the files written.

    A configuration of ``grid`` drawn here (its depth and width shown)
    without a record in ``records`` is a hollow circle at t = 1 in its
    width's colour, named in its panel, with a legend entry.
    """
    depths = figure2_depths(grid) if depths is None else list(depths)
    widths = figure2_widths(grid.widths)
    records = [r for r in records if r.config.width in widths]
    all_holes = grid_holes(grid, records)
    holes = [c for c in all_holes if c.depth in depths and c.width in widths]
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
        _mark_missing_curves(ax, [c for c in holes if c.depth == L], cmap, norm)
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
    if holes:
        handles.append(Line2D([], [], color=MISSING_COLOUR, marker="o", mfc="none", ls="",
                              label=f"missing record ({len(holes)} curves)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    note = _missing_note(all_holes, grid)
    if all_holes:
        note += f", {len(holes)} of them among the curves drawn (circled at t = 1)"
    fig.suptitle(f"Relative training loss, {grid.lr.describe()}" + note)
    return save_figure(fig, stem)


def _mark_missing_curves(ax, holes, cmap, norm) -> None:
    """A hollow circle at (t = 1, loss ratio 1) per configuration without a record, and their names."""
    if not holes:
        return
    for c in holes:
        ax.plot([1], [1.0], "o", mfc="none", mec=cmap(norm(c.width)), ms=10, mew=1.8, zorder=3)
    names = [f"{INIT_LABELS.get(c.init, c.init)} m={c.width} seed {c.seed}" for c in holes[:NAMED_HOLES]]
    if len(holes) > NAMED_HOLES:
        names.append(f"and {len(holes) - NAMED_HOLES} more")
    ax.text(0.03, 0.03, "missing record:\n" + "\n".join(names), transform=ax.transAxes, ha="left",
            va="bottom", fontsize=7, color=MISSING_COLOUR,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": MISSING_COLOUR})


def plot_store(directory, *, figures=("figure1", "figure2")) -> dict:
    """Redraw the figures (and ``figure1_summary.json``) of a result store.

    Only whole records are drawn (read-only: nothing is moved or run);
    configurations without one are marked on the figures and listed.

    Returns {"figure1": [paths], "figure2": [paths], "summary": path, "summary_data": dict,
    "missing": [entries as in the summary's "missing"], "expected": number of configurations}.
    """
    store = ResultStore(directory)
    grid = store.load_grid_spec()
    inventory = store.grid_inventory(grid)
    records = list(inventory.records.values())
    if not records:
        raise ValueError(f"{store.root} holds no finished configuration of its grid yet")
    missing = missing_entries(inventory, hole_fields)
    out = {"missing": missing, "expected": len(inventory.expected)}
    if "figure1" in figures:
        summary = figure1_summary(grid, records, missing=missing)
        out["summary"] = write_summary(summary, store.root / "figure1_summary.json")
        out["summary_data"] = summary
        out["figure1"] = figure1(grid, records, store.root / "figure1")
    if "figure2" in figures:
        out["figure2"] = figure2(grid, records, store.root / "figure2")
    return out
