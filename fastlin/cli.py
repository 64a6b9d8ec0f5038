"""The ``fastlin`` command."""

from __future__ import annotations

import argparse
import sys



def log_spaced_steps(steps: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``steps`` (and ``steps`` itself)."""
    out, decade = [], 1
    while decade <= steps:
        out += [k * decade for k in (1, 2, 5) if k * decade <= steps]
        decade *= 10
    if steps and out[-1] != steps:
        out.append(steps)
    return out


def cmd_train(args) -> int:
    from . import init_weights, network_dims, paper_data, prepare, train
    from .ntk import AUTO_LR_SCALE, auto_lr

    X, Y = paper_data(rng=args.data_seed)
    dims = network_dims(args.depth, args.width, X.shape[0], Y.shape[0])
    if args.backend != "numpy":  # the NumPy reference has nothing to compile
        if not args.quiet:
            print(f"preparing the {args.backend.upper()} kernel ({args.dtype}; Numba compiles it on first "
                  f"use and caches it) ...", end="", file=sys.stderr, flush=True)
        seconds = prepare(args.backend, args.dtype)
        if not args.quiet:
            print(f" ready in {seconds:.1f} s", file=sys.stderr, flush=True)
    weights = init_weights(dims, args.init, rng=args.seed)
    if args.lr is not None:
        lr = args.lr
    else:
        scale = AUTO_LR_SCALE if args.lr_scale is None else args.lr_scale
        lr, lam_max = auto_lr(weights, X, scale)
        print(f"lr = {scale:g} / λ_max(Θ(0)) = {lr:.4g}  (λ_max(Θ(0)) = {lam_max:.4g} for this net; "
              f"GD near init is stable for lr < 2/λ_max = {2 / lam_max:.4g}; --lr or --lr-scale to change)")
    result = train(weights, X, Y, lr=lr, steps=args.steps, backend=args.backend,
                   dtype=args.dtype, progress=not args.quiet)
    print(f"depth L={args.depth}  width m={args.width}  init={args.init}  lr={lr:.4g}  "
          f"backend={args.backend}  dtype={args.dtype}")
    print(f"{'step':>8}  {'loss(t)/loss(0)':>16}")
    rel = result.relative_loss
    for t in log_spaced_steps(args.steps):
        print(f"{t:>8}  {rel[t]:>16.6e}")
    print(f"status={result.status}  steps_run={result.steps_run}  "
          f"time={result.seconds:.2f} s ({1e3 * result.seconds / max(1, result.steps_run):.3f} ms/step)")
    return 0


def _sweep_options(p) -> None:
    p.add_argument("--out", required=True, help="result store directory (created; reruns resume it)")
    p.add_argument("--executor", default="threads",
                   help="threads (default), processes, dask, or gpu (CUDA batch kernel: slices of the grid per launch)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel configurations (default: all cores)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster)")
    p.add_argument("--force", action="store_true", help="recompute configurations already stored")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def print_drawn(drawn: dict, where) -> None:
    """List the files plot_store wrote, the critical-width summary if there is one, and what is missing."""
    from .experiments import format_summary
    from .experiments.integrity import format_missing

    for name in ("figure1", "figure2"):
        if name in drawn:
            print(f"{name}: " + ", ".join(str(p) for p in drawn[name]))
    if "summary" in drawn:
        print(f"summary: {drawn['summary']}")
        print(format_summary(drawn["summary_data"]))
    if drawn.get("missing"):
        print(format_missing(drawn["missing"], drawn["expected"], where, drawn.get("summary")))


def _run_and_plot(grid, args, figures) -> int:
    from .experiments import run_sweep
    from .plots import plot_store

    if args.scheduler is not None and args.executor != "dask":
        raise ValueError("--scheduler needs --executor dask")
    summary = run_sweep(grid, args.out, executor=args.executor, workers=args.workers,
                        scheduler=args.scheduler, force=args.force, progress=not args.quiet)
    if args.quiet:
        print(summary.line())
    if summary.done + summary.skipped == 0:
        raise RuntimeError("no configuration finished; nothing to plot")
    drawn = plot_store(args.out, figures=figures)
    print_drawn(drawn, args.out)
    return 1 if summary.failed else 0


def cmd_reproduce(args) -> int:
    if args.figure not in ("figure1", "figure2"):  # a study: fastlin/experiments/study.py
        from .experiments.study_cli import reproduce_study

        return reproduce_study(args)
    from .experiments import default_workers, estimate_sweep_seconds, format_seconds, preset_grid

    grid = preset_grid(args.figure, args.preset, backend=args.backend)
    configs = grid.configs()
    print(f"fastlin reproduce {args.figure} --preset {args.preset}: {len(configs)} configurations "
          f"({len(grid.inits)} inits x {len(grid.depths)} depths x {len(grid.widths)} widths x "
          f"{len(grid.seeds)} seeds), {grid.steps} steps, {grid.lr.describe()}, "
          f"backend {grid.backend}, {grid.dtype}")
    if args.preset == "paper" or args.estimate_only:
        workers = args.workers or (1 if grid.backend == "cuda" else default_workers())
        est = estimate_sweep_seconds(grid, workers=workers, progress=not args.quiet)
        probes = "; ".join(f"L={p['depth']} m={p['width']}: {1e3 * p['seconds_per_step']:.3g} ms/step"
                           for p in est["probes"])
        print(f"estimated run time: {format_seconds(est['seconds'])} with {workers} worker(s) "
              f"on backend {grid.backend} (measured {probes}; finished configurations are skipped)")
        if args.estimate_only:
            return 0
    return _run_and_plot(grid, args, figures=(args.figure,))


def cmd_sweep(args) -> int:
    from .experiments import Grid

    grid = Grid.from_toml(args.grid)
    if args.backend:
        grid = grid.replace(backend=args.backend)
    return _run_and_plot(grid, args, figures=("figure1", "figure2"))


def cmd_plot(args) -> int:
    from pathlib import Path

    from .experiments.study import SPEC_FILE

    if (Path(args.dir) / SPEC_FILE).is_file():
        from .experiments.study_cli import plot_study

        return plot_study(args.dir)
    from .plots import plot_store

    figures = ("figure1", "figure2") if args.figure == "all" else (args.figure,)
    try:
        drawn = plot_store(args.dir, figures=figures)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    print_drawn(drawn, args.dir)
    return 0


def cmd_check(args) -> int:
    from .experiments.check import check_directory

    try:
        report = check_directory(args.dir)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    print(report.format())
    return 0 if report.whole else 1


def build_parser() -> argparse.ArgumentParser:
    from .experiments.study import study_names
    from .kernels import BACKENDS, DEFAULT_BACKEND

    parser = argparse.ArgumentParser(prog="fastlin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one net on the paper's data and print its relative loss")
    p.add_argument("--depth", type=int, required=True, help="number of layers L")
    p.add_argument("--width", type=int, required=True, help="hidden width m")
    p.add_argument("--init", choices=["orthogonal", "gaussian"], required=True)
    p.add_argument("--steps", type=int, default=1000, help="GD steps (default 1000)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate on the raw weights (default: --lr-scale / lambda_max of the net's "
                        "NTK at init)")
    p.add_argument("--lr-scale", type=float, default=None,
                   help="c in lr = c / lambda_max(Theta(0)) when --lr is not given (default 0.5: a quarter "
                        "of the stability edge 2 / lambda_max of GD near init; must be in (0, 2))")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight init")
    p.add_argument("--data-seed", type=int, default=0, help="seed of X and W* (default 0)")
    p.add_argument("--backend", choices=list(BACKENDS), default=DEFAULT_BACKEND)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="run a preset sweep of the paper (or a study) and draw its figure")
    p.add_argument("figure", choices=["figure1", "figure2"] + study_names(),
                   help="a figure of Hu et al., or a study of Huang et al. (ntk-width, ntk-drift, "
                        "ntk-spectrum: the NTK of deep linear nets; speed: tanh nets on digits)")
    p.add_argument("--preset", choices=["quick", "paper"], default="quick",
                   help="quick: 2 CPU cores, minutes; paper: the paper's grid, for a GPU")
    p.add_argument("--backend", choices=list(BACKENDS), default=None,
                   help="override the preset's backend (default: the fastest available)")
    p.add_argument("--estimate-only", action="store_true",
                   help="print the estimated run time (measured step rates) and stop")
    _sweep_options(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("sweep", help="run the grid of a TOML file into a result store, then plot")
    p.add_argument("grid", help="grid file (TOML); see fastlin.experiments.Grid.from_toml")
    p.add_argument("--backend", choices=list(BACKENDS), default=None,
                   help="override the grid file's backend")
    _sweep_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="redraw the figures and summary of a result store or study (no training)")
    p.add_argument("dir", help="result store directory")
    p.add_argument("--figure", choices=["figure1", "figure2", "all"], default="all")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("check", help="verify every record of a result store or study; exit 0 only if it is whole",
                       description="Verify every record of a result store (sweep.json) or study (study.json): "
                                   "it loads, matches its configuration and is finite where its status says "
                                   "completed or converged. Prints a table of the problems; exit status 0 "
                                   "only when every configuration has a whole record, 1 otherwise. Reads "
                                   "only: a sweep or study run into DIR moves damaged files to "
                                   "damaged/ and computes them again.")
    p.add_argument("dir", help="result store or study directory")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError) as exc:
        print(f"fastlin: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
