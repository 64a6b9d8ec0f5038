"""The NTK experiments of Huang, Du & Xu (IJCAI 2021) on deep linear nets, as studies.

* ``ntk-width`` (their Fig. 1): ‖Θ(0) − Θ_∞‖_F/‖Θ_∞‖_F against the width m,
  per depth, Gaussian and orthogonal init. Expected: Gaussian ≈ 2 sqrt(L/m)
  (slope −1/2 in log-log); orthogonal exactly Θ_∞ once m ≥ d_x.
* ``ntk-drift`` (their Fig. 2): after GD to convergence,
  ‖Θ(T) − Θ(0)‖_F/‖Θ(0)‖_F and each layer's ‖W_i(T) − W_i(0)‖_F/‖W_i(0)‖_F
  against m. Expected: ~1/m for both inits, Gaussian larger.
* ``ntk-spectrum`` (the mechanism of Theorems 4.1 and 5.1 of Hu et al.):
  λ_min(Θ(t))/λ_min(Θ_∞), η λ_max(Θ(t))/2 and loss(t)/‖Y‖²_F along GD of
  deep narrow nets. Expected: Gaussian λ_min collapses (e^{−cL/m}) and the
  loss stays in Theorem 5.1's window [0.4, 0.6] ‖Y‖²_F; orthogonal keeps
  λ_min of order λ_min(Θ_∞) and converges geometrically.

Data: the paper's (X 1024 × 16, W* 10 × 1024, Y = W* X, data seed 0).
Learning rate of the training studies: half the Theorem 4.1 rate,
η = 0.5 d_y/(2L‖X‖²), as the loss presets (``presets.PAPER_LR``), so
η λ_max(Θ_∞)/2 = 1/8 at init.

Presets: ``quick`` (2 CPU cores, under 5 minutes each, first compile
included), ``paper`` (more depths, widths, seeds and steps; hours),
``tiny`` (seconds, for tests).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .. import ntk
from .study import Study, json_number, register_study

INITS = ("gaussian", "orthogonal")
PAPER_DATA = {"data_seed": 0, "dx": 1024, "n": 16, "dy": 10}
LR_SCALE = 0.5
# Theorem 5.1's window for loss(t)/‖Y‖²_F (Gaussian nets narrower than deep stay in it).
LOSS_WINDOW = (0.4, 0.6)


def _data(config):
    from .task import problem_data

    return problem_data(config["data_seed"], config["dx"], config["n"], config["dy"], "float64")


def _dims(config):
    from ..init import network_dims

    return network_dims(config["depth"], config["width"], config["dx"], config["dy"])


def _grid(depths, widths, seeds, **shared):
    return [{"init": init, "depth": L, "width": m, "seed": s, **PAPER_DATA, **shared}
            for init in INITS for L in depths for m in widths for s in seeds]


def _step_weights(config) -> int:
    dims = _dims(config)
    return sum(dims[i] * dims[i - 1] for i in range(1, len(dims)))


def _prepare_cpu(configs, progress, stream):
    """Compile the CPU kernel of the training studies before the progress bar starts."""
    from .runner import prepare_cpu_kernel

    if any(c.get("backend") == "cpu" for c in configs):
        prepare_cpu_kernel("float64", progress, stream)


def _backend(backend):
    from .presets import available_backend

    return backend or available_backend(allow_cuda=False)


def fit_loglog(points) -> dict:
    """Least-squares slope s of log y = s log m + c_L over (L, m, y) points, one intercept per depth.

    Returns {"slope": s (pooled over depths), "by_depth": {L: slope}, "points": count};
    slopes are None where fewer than two widths are available.
    """
    by_depth = defaultdict(list)
    for L, m, y in points:
        if y > 0 and math.isfinite(y):
            by_depth[L].append((math.log(m), math.log(y)))
    per_depth, xs, ys = {}, [], []
    for L, pairs in sorted(by_depth.items()):
        x, y = np.array(pairs).T
        if len(set(x)) < 2:
            per_depth[str(L)] = None
            continue
        per_depth[str(L)] = float(np.polyfit(x, y, 1)[0])
        xs.append(x - x.mean())  # per-depth intercepts: centre each depth
        ys.append(y - y.mean())
    slope = None
    if xs and np.sum(np.concatenate(xs) ** 2) > 0:
        x, y = np.concatenate(xs), np.concatenate(ys)
        slope = float(x @ y / (x @ x))
    return {"slope": slope, "by_depth": per_depth, "points": sum(len(p) for p in by_depth.values())}


def medians(records, key, where=lambda r: True) -> dict:
    """{(init, L, m): (median, min, max) over seeds of record[key]}."""
    values = defaultdict(list)
    for r in records:
        if where(r):
            c = r.config
            values[c["init"], c["depth"], c["width"]].append(float(r[key]))
    return {k: (float(np.median(v)), float(np.min(v)), float(np.max(v))) for k, v in values.items()}


def _table(stats) -> dict:
    """{init: {"L=..": {"m": median}}} for JSON."""
    out = defaultdict(lambda: defaultdict(dict))
    for (init, L, m), (med, _, _) in sorted(stats.items()):
        out[init][f"L={L}"][str(m)] = json_number(med)
    return {init: dict(v) for init, v in out.items()}


# -- ntk-width ---------------------------------------------------------------------------------


def run_width(config) -> dict:
    """Θ(0) of one net against Θ_∞ (layers drawn one at a time: :mod:`.layerwise`)."""
    from .layerwise import initial_factors

    X, _ = _data(config)
    f0 = initial_factors(_dims(config), config["init"], config["seed"], X)
    limit = ntk.infinite(X, config["depth"], config["dy"])
    lam_min, lam_max = ntk.eigs(f0)
    inf_min, inf_max = ntk.eigs(limit)
    return {"distance": ntk.distance(f0, limit), "lambda_min": lam_min, "lambda_max": lam_max,
            "lambda_min_infinite": inf_min, "lambda_max_infinite": inf_max}


def width_cost(config) -> float:
    # Normal draws (each layer twice) dominate Gaussian nets; orthogonal ones
    # add a Python loop over min(d_i, d_{i-1}) reflectors per layer and pass,
    # about 2000 draws' worth each (measured: 0.1 s per 2048-wide layer).
    dims = _dims(config)
    cost = 2.0 * _step_weights(config)
    if config["init"] == "orthogonal":
        cost += 2 * 2000.0 * sum(min(dims[i], dims[i - 1]) for i in range(1, len(dims)))
    return cost


def width_summary(records) -> dict:
    dx = records[0].config["dx"] if records else None
    stats = medians(records, "distance")
    gauss = [(L, m, med) for (init, L, m), (med, _, _) in stats.items()
             if init == "gaussian" and m >= 4 * L]
    fit = fit_loglog(gauss)
    # 2 sqrt(L/m) is the predicted Gaussian error: its measured prefactor.
    prefactor = [med / math.sqrt(L / m) for L, m, med in gauss]
    wide = [float(r["distance"]) for r in records
            if r.config["init"] == "orthogonal" and r.config["width"] >= r.config["dx"]]
    narrow = {k: v for k, v in stats.items() if k[0] == "orthogonal" and k[2] < dx}
    return {
        "slope": {"gaussian": fit["slope"]},
        "slope_by_depth": {"gaussian": fit["by_depth"]},
        "slope_fit": "log median distance = s log m + c_L over Gaussian nets with m >= 4L "
                     "(one intercept per depth; s pooled)",
        "gaussian_prefactor_median": json_number(float(np.median(prefactor))) if prefactor else None,
        "orthogonal_max_error_wide": json_number(max(wide)) if wide else None,
        "orthogonal_error_below_dx": _table(narrow),
        "median_distance": _table(stats),
        "data": {k: records[0].config[k] for k in PAPER_DATA} if records else {},
    }


def width_format(summary) -> str:
    def g(x):
        return "n/a" if x is None else f"{x:.3g}"

    s = summary["slope"]["gaussian"]
    lines = [f"ntk-width: Gaussian slope of ‖Θ(0) − Θ_∞‖/‖Θ_∞‖ vs m = "
             f"{'n/a' if s is None else f'{s:+.3f}'} (expected -1/2), by depth "
             + ", ".join(f"L={L}: {'n/a' if v is None else f'{v:+.3f}'}"
                         for L, v in summary["slope_by_depth"]["gaussian"].items()),
             f"  Gaussian error / sqrt(L/m) over m >= 4L: median {g(summary['gaussian_prefactor_median'])} "
             f"(expected ~2)",
             f"  orthogonal, m >= d_x: max error {g(summary['orthogonal_max_error_wide'])} (expected <= 1e-12)"]
    return "\n".join(lines)


def _width_presets():
    def quick(backend=None):
        _no_backend("ntk-width", backend)
        return _grid((2, 8, 32), (16, 32, 64, 128, 256, 512, 1024, 2048), range(5))

    def paper(backend=None):
        _no_backend("ntk-width", backend)
        return _grid((2, 4, 8, 16, 32, 64, 128), (16, 32, 64, 128, 256, 512, 1024, 2048, 4096), range(10))

    def tiny(backend=None):
        _no_backend("ntk-width", backend)
        return [dict(c, dx=24, n=6, dy=3) for c in _grid((2, 4), (8, 16, 32, 64), range(2))]

    return {"quick": quick, "paper": paper, "tiny": tiny}


def _no_backend(name, backend):
    if backend is not None:
        raise ValueError(f"{name} trains nothing: it has no backend to choose")


def _plot_width(records, out):
    from ..ntk_plots import width_figure

    return width_figure(records, out)


# -- ntk-drift ---------------------------------------------------------------------------------


def run_drift(config) -> dict:
    """GD to loss(t)/loss(0) ≤ ``rtol_stop`` (or ``max_steps``); how far Θ and each W_i moved."""
    from ..init import init_weights
    from ..model import theorem_lr
    from ..train import train

    X, Y = _data(config)
    W0 = init_weights(_dims(config), config["init"], rng=config["seed"])
    lr = config["lr_scale"] * theorem_lr(X, config["depth"], config["dy"])
    result = train(W0, X, Y, lr=lr, steps=config["max_steps"], backend=config["backend"],
                   rtol_stop=config["rtol_stop"], ntk=[0])
    drift = ntk.distance(ntk.factors(result.weights, X), result.ntk[0]) if result.status != "diverged" \
        else math.nan
    layers = np.array([np.linalg.norm(W - V) / np.linalg.norm(V) for W, V in zip(result.weights, W0)])
    return {"ntk_drift": drift, "weight_drift": layers, "steps_run": result.steps_run,
            "status": result.status, "final_relative_loss": float(result.relative_loss[-1]), "lr": lr}


def drift_cost(config) -> float:
    # GD steps are the cost; about 100-300 until rtol 1e-6 on the paper's data.
    return min(config["max_steps"], 300) * (_step_weights(config) + 2000.0 * config["depth"])


def drift_summary(records) -> dict:
    ok = [r for r in records if r["status"] == "converged"]
    stats = medians(ok, "ntk_drift")
    slopes, by_depth = {}, {}
    for init in INITS:
        fit = fit_loglog([(L, m, med) for (i, L, m), (med, _, _) in stats.items() if i == init and m >= 128])
        slopes[init], by_depth[init] = fit["slope"], fit["by_depth"]
    ratio = [stats["gaussian", L, m][0] / stats["orthogonal", L, m][0] for (i, L, m) in stats
             if i == "gaussian" and ("orthogonal", L, m) in stats and stats["orthogonal", L, m][0] > 0]
    layer_slopes = {}
    for init in INITS:
        for part, pick in (("first", lambda w: w[0]), ("hidden", lambda w: float(np.median(w[1:-1]))),
                           ("last", lambda w: w[-1])):
            values = defaultdict(list)
            for r in ok:
                c = r.config
                if c["init"] == init and c["width"] >= 128 and (part != "hidden" or c["depth"] > 2):
                    values[c["depth"], c["width"]].append(pick(np.asarray(r["weight_drift"])))
            fit = fit_loglog([(L, m, float(np.median(v))) for (L, m), v in values.items()])
            layer_slopes.setdefault(init, {})[part] = fit["slope"]
    return {
        "slope": slopes,
        "slope_by_depth": by_depth,
        "slope_fit": "log median ‖Θ(T) − Θ(0)‖/‖Θ(0)‖ = s log m + c_L over m >= 128 "
                     "(one intercept per depth; s pooled)",
        "gaussian_over_orthogonal_median": json_number(float(np.median(ratio))) if ratio else None,
        "weight_drift_slope": layer_slopes,
        "median_ntk_drift": _table(stats),
        "not_converged": [dict(r.config, status=r["status"], final_relative_loss=r["final_relative_loss"])
                          for r in records if r["status"] != "converged"],
        "steps_run_max": int(max(r["steps_run"] for r in records)) if records else None,
    }


def drift_format(summary) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:+.3f}"

    def g(x):
        return "n/a" if x is None else f"{x:.3g}"

    s = summary["slope"]
    lines = [f"ntk-drift: slope of ‖Θ(T) − Θ(0)‖/‖Θ(0)‖ vs m (m >= 128): Gaussian {f(s['gaussian'])}, "
             f"orthogonal {f(s['orthogonal'])} (expected -1); Gaussian / orthogonal drift: median "
             f"{g(summary['gaussian_over_orthogonal_median'])}"]
    for init, parts in summary["weight_drift_slope"].items():
        lines.append(f"  {init} ‖ΔW_i‖/‖W_i‖ slopes: " + ", ".join(f"{k} {f(v)}" for k, v in parts.items()))
    if summary["not_converged"]:
        lines.append(f"  {len(summary['not_converged'])} run(s) did not converge (left out of the fits)")
    return "\n".join(lines)


def _drift_presets():
    shared = {"lr_scale": LR_SCALE, "rtol_stop": 1e-6}

    def quick(backend=None):
        return _grid((4, 8), (32, 64, 128, 256, 512, 1024), range(3), max_steps=3000,
                     backend=_backend(backend), **shared)

    def paper(backend=None):
        return _grid((2, 4, 8, 16), (32, 64, 128, 256, 512, 1024, 2048), range(10), max_steps=10_000,
                     backend=_backend(backend), **shared)

    def tiny(backend=None):
        return [dict(c, dx=24, n=6, dy=3) for c in _grid((2, 3), (16, 32, 64), range(2), max_steps=400,
                                                          backend=backend or "numpy", **shared)]

    return {"quick": quick, "paper": paper, "tiny": tiny}


def _plot_drift(records, out):
    from ..ntk_plots import drift_figure

    return drift_figure(records, out)


# -- ntk-spectrum ------------------------------------------------------------------------------


def ntk_steps(steps: int, points: int) -> list[int]:
    """0 and about ``points`` log-spaced steps from 1 to ``steps``."""
    from .grid import log_spaced_ints

    return [0] + log_spaced_ints(1, steps, points) if steps > 0 else [0]


def run_spectrum(config) -> dict:
    """GD for ``steps`` steps with Θ(t) recorded at log-spaced t: its extreme eigenvalues, drift, loss."""
    from ..init import init_weights
    from ..model import theorem_lr
    from ..train import train

    X, Y = _data(config)
    L = config["depth"]
    W0 = init_weights(_dims(config), config["init"], rng=config["seed"])
    lr = config["lr_scale"] * theorem_lr(X, L, config["dy"])
    result = train(W0, X, Y, lr=lr, steps=config["steps"], backend=config["backend"],
                   ntk=ntk_steps(config["steps"], config["ntk_points"]))
    t, lam_min, lam_max, drift = result.ntk_trajectory()
    inf_min, inf_max = ntk.eigs(ntk.infinite(X, L, config["dy"]))
    return {"t": t, "lambda_min": lam_min, "lambda_max": lam_max, "ntk_drift": drift,
            "loss": result.loss, "lr": lr, "y_norm2": float(np.sum(Y.astype(np.float64) ** 2)),
            "lambda_min_infinite": inf_min, "lambda_max_infinite": inf_max,
            "status": result.status, "steps_run": result.steps_run}


def spectrum_cost(config) -> float:
    return config["steps"] * (_step_weights(config) + 2000.0 * config["depth"])


def lambda_min_floor(record) -> np.ndarray:
    """N ε λ_max(Θ(t)), N = n·d_y: below it a λ_min from the dense eigensolver is rounding."""
    c = record.config
    return c["n"] * c["dy"] * np.finfo(np.float64).eps * np.asarray(record["lambda_max"])


def in_window(record) -> bool:
    """Whether loss(t)/‖Y‖²_F stayed in Theorem 5.1's window [0.4, 0.6] at every step run."""
    rel = np.asarray(record["loss"])[:record["steps_run"] + 1] / record["y_norm2"]
    return bool(np.all((rel >= LOSS_WINDOW[0]) & (rel <= LOSS_WINDOW[1])))


def spectrum_summary(records) -> dict:
    groups = defaultdict(list)
    for r in records:
        c = r.config
        groups[c["init"], c["depth"], c["width"]].append(r)
    table = {}
    for (init, L, m), rs in sorted(groups.items()):
        alive = [r for r in rs if r["status"] != "diverged"]

        def ratio(r, k):
            # λ_min below the rounding floor counts as the floor ("at most").
            return max(r["lambda_min"][k], lambda_min_floor(r)[k]) / r["lambda_min_infinite"]

        def median(values):
            return json_number(float(np.median(values))) if values else None

        def loss_range(r):
            rel = np.asarray(r["loss"])[:r["steps_run"] + 1] / r["y_norm2"]
            return float(rel.min()), float(rel.max())

        table[f"{init} L={L} m={m}"] = {
            "init": init, "depth": L, "width": m, "seeds": len(rs),
            "diverged": len(rs) - len(alive),
            "lambda_min_ratio_start": median([ratio(r, 0) for r in rs]),
            "lambda_min_ratio_end": median([ratio(r, -1) for r in alive]),
            "lambda_min_at_floor_start": int(sum(r["lambda_min"][0] <= lambda_min_floor(r)[0] for r in rs)),
            "lambda_min_at_floor_end": int(sum(r["lambda_min"][-1] <= lambda_min_floor(r)[-1] for r in alive)),
            "half_eta_lambda_max_start": median([r["lr"] * r["lambda_max"][0] / 2 for r in rs]),
            "half_eta_lambda_max_peak": median([float(np.max(r["lr"] * np.asarray(r["lambda_max"]) / 2))
                                                for r in alive]),
            "final_relative_loss": median([float(r["loss"][r["steps_run"]] / r["loss"][0]) for r in alive]),
            "loss_over_y2_min": median([loss_range(r)[0] for r in alive]),
            "loss_over_y2_max": median([loss_range(r)[1] for r in alive]),
            "loss_in_window": sum(in_window(r) for r in rs),
        }
    return {"window": list(LOSS_WINDOW),
            "by_net": table,
            "keys": "medians over seeds (those that did not diverge, for values along the run): "
                    "λ_min(Θ(t))/λ_min(Θ_∞) at t = 0 and at the last step, where a λ_min below the "
                    "eigensolver's rounding floor N ε λ_max(Θ(t)) (N = n d_y) counts as the floor "
                    "(lambda_min_at_floor_start, _end: seeds at the floor); η λ_max(Θ(t))/2 at t = 0 "
                    "and its peak over t (1 = edge of stability); loss(T)/loss(0); the least and "
                    "largest loss(t)/‖Y‖²_F; loss_in_window: seeds whose loss(t)/‖Y‖²_F stayed in "
                    "[0.4, 0.6] at every step"}


def spectrum_format(summary) -> str:
    def g(x):
        return "n/a" if x is None else f"{x:.1e}"

    lines = ["ntk-spectrum: medians over seeds (λ_min ratio = λ_min(Θ(t))/λ_min(Θ_∞); values along the "
             "run over seeds that did not diverge)",
             "  (≤: at least half the seeds at the eigensolver's rounding floor N ε λ_max)",
             f"  {'net':<22} {'ratio t=0':>10} {'ratio end':>10} {'ηλmax/2 t=0':>11} {'peak':>8} "
             f"{'loss(T)/loss(0)':>15} {'loss/‖Y‖² range':>17} {'window':>6} {'diverged':>8}"]
    for key, row in summary["by_net"].items():
        span = f"{g(row['loss_over_y2_min'])}..{g(row['loss_over_y2_max'])}"
        floor = "≤" if 2 * row["lambda_min_at_floor_start"] >= row["seeds"] else ""
        alive = row["seeds"] - row["diverged"]
        floor_end = "≤" if alive and 2 * row["lambda_min_at_floor_end"] >= alive else ""
        lines.append(f"  {key:<22} {floor + g(row['lambda_min_ratio_start']):>10} "
                     f"{floor_end + g(row['lambda_min_ratio_end']):>10} "
                     f"{g(row['half_eta_lambda_max_start']):>11} {g(row['half_eta_lambda_max_peak']):>8} "
                     f"{g(row['final_relative_loss']):>15} {span:>17} "
                     f"{str(row['loss_in_window']) + '/' + str(row['seeds']):>6} "
                     f"{row['diverged']:>8}")
    return "\n".join(lines)


def _spectrum_presets():
    shared = {"lr_scale": LR_SCALE, "ntk_points": 30}

    def quick(backend=None):
        return _grid((32, 64, 128), (16, 32, 64), range(3), steps=1000, backend=_backend(backend), **shared)

    def paper(backend=None):
        return _grid((32, 64, 128, 256), (16, 32, 64, 128), range(5), steps=10_000,
                     backend=_backend(backend), **shared)

    def tiny(backend=None):
        return [dict(c, dx=12, n=6, dy=3) for c in _grid((4, 8), (4, 16), range(2), steps=60,
                                                          backend=backend or "numpy",
                                                          **dict(shared, ntk_points=8))]

    return {"quick": quick, "paper": paper, "tiny": tiny}


def _plot_spectrum(records, out):
    from ..ntk_plots import spectrum_figure

    return spectrum_figure(records, out)


WIDTH = register_study(Study(
    name="ntk-width", description="‖Θ(0) − Θ_∞‖/‖Θ_∞‖ vs width, Gaussian and orthogonal (Huang et al. Fig. 1)",
    presets=_width_presets(), run=run_width, summarize=width_summary, plot=_plot_width,
    cost=width_cost, format_summary=width_format))

DRIFT = register_study(Study(
    name="ntk-drift", description="‖Θ(T) − Θ(0)‖/‖Θ(0)‖ and ‖ΔW_i‖/‖W_i‖ after GD vs width (Huang et al. Fig. 2)",
    presets=_drift_presets(), run=run_drift, summarize=drift_summary, plot=_plot_drift,
    cost=drift_cost, prepare=_prepare_cpu,
    format_summary=drift_format))

SPECTRUM = register_study(Study(
    name="ntk-spectrum", description="λ_min, η λ_max/2 and the loss along GD of deep narrow nets "
                                     "(Theorems 4.1 and 5.1 of Hu et al.)",
    presets=_spectrum_presets(), run=run_spectrum, summarize=spectrum_summary, plot=_plot_spectrum,
    cost=spectrum_cost, prepare=_prepare_cpu,
    format_summary=spectrum_format))
