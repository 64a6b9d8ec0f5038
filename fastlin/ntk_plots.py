"""Figures of the NTK studies (:mod:`fastlin.experiments.ntk_studies`), drawn from stored records only.

Built on matplotlib's object API with the Agg canvas, as :mod:`fastlin.plots`;
saved as PNG and PDF, each file atomically. Gaussian nets are drawn solid, orthogonal nets dashed;
medians over seeds, with the range over seeds shaded where there are several.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .plots import save_figure

FORMATS = ("png", "pdf")
INIT_STYLES = {"gaussian": "-", "orthogonal": "--"}
INIT_LABELS = {"gaussian": "Gaussian", "orthogonal": "orthogonal"}
# Distances are drawn on a log axis; an exact zero sits at this floor.
LOG_FLOOR = 1e-17
# Lowest loss(t)/‖Y‖²_F drawn: float64 runs end near 1e-30, which would squeeze
# Theorem 5.1's window [0.4, 0.6] into a line.
LOSS_AXIS_FLOOR = 1e-12


def _save(fig: Figure, stem) -> list[Path]:
    """Write ``fig`` in each of FORMATS, atomically (:func:`fastlin.plots.save_figure`)."""
    return save_figure(fig, stem, FORMATS)


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
    axes = fig.subplots(1, 2)
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
    for ax in axes:
        ax.set_ylabel("‖Θ(0) − Θ_∞‖_F / ‖Θ_∞‖_F")
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


def _lambda_min_ratio(r) -> np.ndarray:
    """λ_min(Θ(t))/λ_min(Θ_∞), raised to the rounding floor of the dense eigensolver.

    LAPACK's eigenvalues of the N × N Gram (N = n·d_y) are accurate to about
    N ε λ_max(Θ(t)); below that a computed λ_min (even a negative one) only
    says "at most the floor", and is drawn there.
    """
    from .experiments.ntk_studies import lambda_min_floor

    return np.maximum(np.asarray(r["lambda_min"]), lambda_min_floor(r)) / r["lambda_min_infinite"]


def spectrum_figure(records, out) -> list[Path]:
    """Rows: λ_min(Θ(t))/λ_min(Θ_∞), η λ_max(Θ(t))/2, loss(t)/‖Y‖²_F vs t; one column per depth.

    Medians over the seeds that did not diverge; a group whose seeds all
    diverged is drawn seed by seed, thin, up to the divergence (×).
    """
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
        alive = [r for r in rs if r["status"] != "diverged"]
        curves = [alive] if alive else [[r] for r in rs]
        if not alive:
            style["lw"] = 0.6
        for part in curves:
            k = min(len(r["t"]) for r in part)
            t = np.asarray(part[0]["t"])[:k] + 1
            axes[0, col].plot(t, np.median([_lambda_min_ratio(r)[:k] for r in part], axis=0), **style)
            axes[1, col].plot(t, np.median([r["lr"] * np.asarray(r["lambda_max"])[:k] / 2 for r in part],
                                           axis=0), **style)
            n = min(r["steps_run"] for r in part) + 1
            loss = np.median([np.asarray(r["loss"])[:n] / r["y_norm2"] for r in part], axis=0)
            axes[2, col].plot(np.arange(n) + 1, np.maximum(loss, LOSS_AXIS_FLOOR), **style)
        for r in rs:
            if r["status"] == "diverged":
                axes[2, col].plot(r["steps_run"] + 1, 1.0, "x", color=colours[m], ms=5)
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
        # Diverging runs reach 1e180 before their loss overflows; the axes stop at
        # what the other runs show.
        axes[0, col].set_ylim(1e-21, 10)
        axes[1, col].set_ylim(1e-8, 1e3)
        axes[2, col].set_yscale("log")
        axes[2, col].set_ylim(LOSS_AXIS_FLOOR / 3, 3)
        axes[2, col].set_xlabel("step t + 1")
    axes[0, 0].set_ylabel("λ_min(Θ(t)) / λ_min(Θ_∞)")
    axes[1, 0].set_ylabel("η λ_max(Θ(t)) / 2")
    axes[2, 0].set_ylabel("loss(t) / ‖Y‖²_F")
    _legend(axes[0, 0], colours, "m")
    axes[1, 0].legend(handles=[Line2D([], [], color="0.4", lw=0.8, label="edge of stability")], fontsize=7)
    axes[2, 0].legend(handles=[Patch(color="tab:red", alpha=0.12, label="Theorem 5.1: [0.4, 0.6]"),
                               Line2D([], [], ls="", marker="x", color="k", label="diverged")], fontsize=7)
    fig.suptitle("NTK spectrum along GD (paper's data, η = half the Theorem 4.1 rate)\nmedians over the "
                 "seeds that did not diverge; λ_min at the rounding floor N ε λ_max drawn there", fontsize=10)
    return _save(fig, Path(out) / "ntk-spectrum")
