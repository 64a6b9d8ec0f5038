"""The quantitative read-out of Figure 1: critical widths m*(L) and their depth slope.

For each init and depth L, the critical width m*(L) is the smallest width of
the grid whose relative loss loss(t)/loss(0) at the read-out step t is below
a threshold (the median over seeds; a diverged run counts as +inf, never
below). The paper's claim (Hu, Xiao & Pennington 2020, Theorems 4.1 and 5.1)
is m* ~ L for Gaussian init and m* ~ L^0 for orthogonal init; we fit

    log m*(L) = s log L + c

by least squares over the depths where m* exists (a width below threshold
was found in the grid) and report s and the number of depths used.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .grid import Grid
from .store import RunRecord, atomic_write_bytes, hole_fields


def relative_loss_at(records: list[RunRecord], step: int) -> dict:
    """{(init, L, m): median over seeds of loss(t)/loss(0) at t = step}; diverged -> +inf."""
    values = defaultdict(list)
    for r in records:
        c = r.config
        if step > c.steps:
            raise ValueError(f"read-out step {step} is past the run's last step {c.steps}")
        rel = r.loss[step] / r.loss[0]
        values[c.init, c.depth, c.width].append(rel if math.isfinite(rel) else math.inf)
    return {key: float(np.median(v)) for key, v in values.items()}


def critical_widths(records: list[RunRecord], step: int, threshold: float) -> dict:
    """{init: {L: m*(L) or None}}: the smallest width with relative loss < threshold."""
    below = defaultdict(list)  # (init, L) -> widths below threshold
    for (init, depth, width), rel in relative_loss_at(records, step).items():
        below[init, depth] += [width] if rel < threshold else []
    out = defaultdict(dict)
    for (init, depth), widths in sorted(below.items()):
        out[init][depth] = min(widths, default=None)
    return dict(out)


@dataclass
class SlopeFit:
    """log m* = slope * log L + intercept (natural logs), fitted over ``points`` depths."""

    slope: float
    intercept: float
    points: int
    depths: list

    def width_at(self, depth):
        """The fitted critical width at depth L."""
        return np.exp(self.intercept) * np.asarray(depth, dtype=float) ** self.slope


def fit_slope(critical: dict) -> SlopeFit:
    """Least-squares fit of log m*(L) = s log L + c over the depths where m* exists.

    ``critical`` maps L -> m*(L) or None. With fewer than two distinct depths
    the slope is NaN.
    """
    pairs = sorted((L, m) for L, m in critical.items() if m is not None)
    depths = [L for L, _ in pairs]
    if len(set(depths)) < 2:
        return SlopeFit(math.nan, math.nan, len(pairs), depths)
    x = np.log([L for L, _ in pairs])
    y = np.log([m for _, m in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    return SlopeFit(float(slope), float(intercept), len(pairs), depths)


def _json_number(x):
    return None if x is None or not math.isfinite(x) else x


def grid_holes(grid: Grid, records: list[RunRecord]) -> list:
    """The configurations of ``grid`` (in grid order) without a record in ``records``."""
    present = {r.config.id for r in records}
    return [c for c in grid.configs() if c.id not in present]


def figure1_summary(grid: Grid, records: list[RunRecord], step: int | None = None,
                    threshold: float | None = None, missing: list | None = None) -> dict:
    """The numbers behind Figure 1: critical widths, slopes and fit sizes per init.

    ``step`` defaults to the grid's last read-out step, ``threshold`` to the
    grid's. Slopes at every read-out step are also given (``by_step``).
    ``missing`` lists the configurations of the grid without a whole record
    (entries {"id", "init", "depth", "width", "seed", "problem", "detail"},
    as :func:`~fastlin.experiments.integrity.missing_entries` gives); by
    default those absent from ``records``. A critical width next to a
    missing configuration may be off: the summary says so by listing it.
    """
    if missing is None:
        missing = [{"id": c.id, **hole_fields(c), "problem": "missing", "detail": "no record"}
                   for c in grid_holes(grid, records)]
    step = grid.readout_steps[-1] if step is None else step
    threshold = grid.threshold if threshold is None else threshold

    def at(t):
        critical = critical_widths(records, t, threshold)
        fits = {init: fit_slope(critical.get(init, {})) for init in grid.inits}
        return critical, fits

    critical, fits = at(step)
    statuses = defaultdict(int)
    for r in records:
        statuses[r.status] += 1
    by_step = {}
    for t in grid.readout_steps:
        _, f = at(t)
        by_step[str(t)] = {init: {"slope": _json_number(f[init].slope), "depths_in_fit": f[init].points}
                           for init in grid.inits}
    return {
        "step": step,
        "threshold": threshold,
        "slope": {init: _json_number(fits[init].slope) for init in grid.inits},
        "intercept": {init: _json_number(fits[init].intercept) for init in grid.inits},
        "depths_in_fit": {init: fits[init].points for init in grid.inits},
        "depths_total": len(grid.depths),
        "critical_width": {init: {str(L): critical.get(init, {}).get(L) for L in grid.depths}
                           for init in grid.inits},
        "by_step": by_step,
        "fit": "log m*(L) = slope * log L + intercept, least squares over depths where m* exists",
        "grid": {"depths": list(grid.depths), "widths": list(grid.widths),
                 "seeds": list(grid.seeds), "steps": grid.steps,
                 "readout_steps": list(grid.readout_steps),
                 "lr": grid.lr.describe(), "dtype": grid.dtype,
                 "data": {"seed": grid.data_seed, "dx": grid.dx, "n": grid.n, "dy": grid.dy}},
        "runs": {"expected": len(grid.configs()), "finished": len(records), "missing": len(missing),
                 **dict(statuses)},
        "missing": list(missing),
    }


def write_summary(summary: dict, path) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(summary, indent=2) + "\n").encode())
    return path


def format_summary(summary: dict) -> str:
    """A few lines for the terminal: slopes, fit sizes and critical widths."""
    lines = [f"critical width m*(L): smallest width with loss(t)/loss(0) < {summary['threshold']:g} "
             f"at t = {summary['step']}"]
    for init, slope in summary["slope"].items():
        widths = ", ".join(f"{L}:{'-' if m is None else m}"
                           for L, m in summary["critical_width"][init].items())
        s = "n/a" if slope is None else f"{slope:+.2f}"
        lines.append(f"  {init:<10} slope s = {s} over {summary['depths_in_fit'][init]}/"
                     f"{summary['depths_total']} depths   m*(L) = {widths}")
    return "\n".join(lines)
