"""Figures of the NTK studies (:mod:`fastlin.experiments.ntk_studies`), drawn from stored records only.

Built on matplotlib's object API with the Agg canvas, as :mod:`fastlin.plots`;
saved as PNG and PDF. Gaussian nets are drawn solid, orthogonal nets dashed;
medians over seeds, with the range over seeds shaded where there are several.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

FORMATS = ("png", "pdf")
INIT_STYLES = {"gaussian": "-", "orthogonal": "--"}
INIT_LABELS = {"gaussian": "Gaussian", "orthogonal": "orthogonal"}
# Distances are drawn on a log axis; an exact zero sits at this floor.
LOG_FLOOR = 1e-17


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


def _colours(values):
    cmap = colormaps["viridis"]
    values = sorted(set(values))
    return {v: cmap(0.85 * k / max(1, len(values) - 1)) for k, v in enumerate(values)}


def _by_width(records, value):
    """{(init, L): (widths, median, min, max)} of value(record) over seeds."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in records:
        c = r.config
        y = value(r)
        if np.isfinite(y):
            groups[c["init"], c["depth"]][c["width"]].append(y)
    out = {}
    for key, by_m in groups.items():
        widths = np.array(sorted(by_m))
        ys = [np.array(by_m[m]) for m in widths]
        out[key] = (widths, np.array([np.median(y) for y in ys]), np.array([y.min() for y in ys]),
                    np.array([y.max() for y in ys]))
    return out


def _curves(ax, table, colours, inits=None):
    for (init, L), (m, med, lo, hi) in sorted(table.items()):
        if inits is not None and init not in inits:
            continue
        ax.plot(m, np.maximum(med, LOG_FLOOR), INIT_STYLES[init], marker="o", ms=3, color=colours[L])
        if np.any(hi > lo):
            ax.fill_between(m, np.maximum(lo, LOG_FLOOR), np.maximum(hi, LOG_FLOOR), color=colours[L],
                            alpha=0.15, lw=0)


def _legend(ax, colours, label, inits=("gaussian", "orthogonal"), extra=()):
    handles = [Line2D([], [], color=c, label=f"{label} = {k}") for k, c in sorted(colours.items())]
    handles += [Line2D([], [], color="k", ls=INIT_STYLES[i], label=INIT_LABELS[i]) for i in inits]
    ax.legend(handles=handles + list(extra), fontsize=7, loc="best")


def width_figure(records, out) -> list[Path]:
    """‖Θ(0) − Θ_∞‖/‖Θ_∞‖ vs m, one panel per init; 2 sqrt(L/m) for Gaussian, m = d_x for orthogonal."""
    table = _by_width(records, lambda r: float(r["distance"]))
    colours = _colours([r.config["depth"] for r in records])
    dx = records[0].config["dx"]
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, init in zip(axes, ("gaussian", "orthogonal")):
        _curves(ax, table, colours, inits=(init,))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_title(f"{INIT_LABELS[init]} init")
        ax.grid(True, which="major", alpha=0.3)
    widths = np.array(sorted({r.config["width"] for r in records}), dtype=float)
    for L, colour in colours.items():
        axes[0].plot(widths, 2 * np.sqrt(L / widths), ":", color=colour, lw=1)
    axes[1].axvline(dx, color="0.4", lw=0.8)
    axes[1].text(dx, 1e-3, " m = d_x", fontsize=8, color="0.3")
    axes[0].set_ylabel("‖Θ(0) − Θ_∞‖_F / ‖Θ_∞‖_F")
    _legend(axes[0], colours, "L", inits=("gaussian",),
            extra=[Line2D([], [], color="k", ls=":", lw=1, label="2 sqrt(L/m)")])
    _legend(axes[1], colours, "L", inits=("orthogonal",))
    fig.suptitle("NTK at initialization vs its infinite-width limit (paper's data, medians and range "
                 "over seeds)", fontsize=10)
    return _save(fig, Path(out) / "ntk-width")


def drift_figure(records, out) -> list[Path]:
    """‖Θ(T) − Θ(0)‖/‖Θ(0)‖ vs m per depth; per-layer ‖ΔW_i‖/‖W_i‖ vs m at the largest depth."""
    ok = [r for r in records if r["status"] == "converged"]
    colours = _colours([r.config["depth"] for r in records])
    fig = Figure(figsize=(10, 4.2))
    ax, bx = fig.subplots(1, 2)
    if ok:
        table = _by_width(ok, lambda r: float(r["ntk_drift"]))
        _curves(ax, table, colours)
        widths = np.array(sorted({r.config["width"] for r in ok}), dtype=float)
        anchor = max(np.median([v[1][0] for v in table.values()]), LOG_FLOOR)
        ax.plot(widths, anchor * np.sqrt(widths[0] / widths), color="0.5", lw=0.8, ls="-.")
        ax.plot(widths, anchor * widths[0] / widths, color="0.5", lw=0.8, ls=":")
        deepest = max(r.config["depth"] for r in ok)
        parts = {"first": lambda w: w[0], "hidden (median)": lambda w: float(np.median(w[1:-1])),
                 "last": lambda w: w[-1]}
        if deepest <= 2:
            del parts["hidden (median)"]
        part_colours = dict(zip(parts, ("tab:blue", "tab:orange", "tab:green")))
        at_depth = [r for r in ok if r.config["depth"] == deepest]
        for name, pick in parts.items():
            t = _by_width(at_depth, lambda r, pick=pick: pick(np.asarray(r["weight_drift"])))
            for (init, _), (m, med, lo, hi) in sorted(t.items()):
                bx.plot(m, med, INIT_STYLES[init], marker="o", ms=3, color=part_colours[name])
        top = max(float(np.max(np.asarray(r["weight_drift"]))) for r in at_depth)
        bx.plot(widths, top * np.sqrt(widths[0] / widths), color="0.5", lw=0.8, ls="-.")
        bx.plot(widths, top * widths[0] / widths, color="0.5", lw=0.8, ls=":")
        refs = [Line2D([], [], color="0.5", ls="-.", lw=0.8, label="∝ 1/sqrt(m)"),
                Line2D([], [], color="0.5", ls=":", lw=0.8, label="∝ 1/m")]
        _legend(ax, colours, "L", extra=refs)
        bx.legend(handles=[Line2D([], [], color=c, label=n) for n, c in part_colours.items()]
                  + [Line2D([], [], color="k", ls=INIT_STYLES[i], label=INIT_LABELS[i]) for i in INIT_STYLES]
                  + refs, fontsize=7)
        bx.set_title(f"‖W_i(T) − W_i(0)‖_F / ‖W_i(0)‖_F, L = {deepest}", fontsize=10)
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("width m")
        a.grid(True, which="major", alpha=0.3)
    ax.set_title("‖Θ(T) − Θ(0)‖_F / ‖Θ(0)‖_F after GD to convergence", fontsize=10)
    return _save(fig, Path(out) / "ntk-drift")


def _median_curve(rs, key, transform):
    """Recorded steps and the median over seeds of transform(record, values) (shortest run's steps)."""
    k = min(len(r["t"]) for r in rs)
    ys = np.array([transform(r, np.asarray(r[key])[:k]) for r in rs])
    return np.asarray(rs[0]["t"])[:k], np.median(ys, axis=0)


def spectrum_figure(records, out) -> list[Path]:
    """Rows: λ_min(Θ(t))/λ_min(Θ_∞), η λ_max(Θ(t))/2, loss(t)/‖Y‖²_F vs t; one column per depth."""
    from .experiments.ntk_studies import LOSS_WINDOW

    groups = defaultdict(list)
    for r in records:
        c = r.config
        groups[c["depth"], c["width"], c["init"]].append(r)
    depths = sorted({r.config["depth"] for r in records})
    colours = _colours([r.config["width"] for r in records])
    fig = Figure(figsize=(4 * len(depths), 9))
    axes = np.array(fig.subplots(3, len(depths), sharex=True, squeeze=False))
    for (L, m, init), rs in sorted(groups.items()):
        col = depths.index(L)
        style = dict(ls=INIT_STYLES[init], color=colours[m], lw=1.2)
        t, y = _median_curve(rs, "lambda_min", lambda r, v: v / r["lambda_min_infinite"])
        axes[0, col].plot(t + 1, np.maximum(y, LOG_FLOOR), **style)
        t, y = _median_curve(rs, "lambda_max", lambda r, v: r["lr"] * v / 2)
        axes[1, col].plot(t + 1, y, **style)
        k = min(r["steps_run"] for r in rs) + 1
        loss = np.median([np.asarray(r["loss"])[:k] / r["y_norm2"] for r in rs], axis=0)
        axes[2, col].plot(np.arange(k) + 1, loss, **style)
    for col, L in enumerate(depths):
        axes[0, col].set_title(f"L = {L}")
        axes[1, col].axhline(1.0, color="0.4", lw=0.8)
        axes[2, col].axhspan(*LOSS_WINDOW, color="tab:red", alpha=0.12, lw=0)
        for row in range(3):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.grid(True, which="major", alpha=0.3)
        axes[0, col].set_yscale("log")
        axes[1, col].set_yscale("log")
        axes[2, col].set_yscale("log")
        axes[2, col].set_xlabel("step t + 1")
    axes[0, 0].set_ylabel("λ_min(Θ(t)) / λ_min(Θ_∞)")
    axes[1, 0].set_ylabel("η λ_max(Θ(t)) / 2")
    axes[2, 0].set_ylabel("loss(t) / ‖Y‖²_F")
    _legend(axes[0, 0], colours, "m")
    axes[1, 0].legend(handles=[Line2D([], [], color="0.4", lw=0.8, label="edge of stability")], fontsize=7)
    axes[2, 0].legend(handles=[Patch(color="tab:red", alpha=0.12, label="Theorem 5.1: [0.4, 0.6]")],
                      fontsize=7)
    fig.suptitle("NTK spectrum along GD (paper's data, η = half the Theorem 4.1 rate; medians over seeds)",
                 fontsize=10)
    return _save(fig, Path(out) / "ntk-spectrum")
