"""Reproduce Figure 1 of Hu, Xiao & Pennington (ICLR 2020) with fastlin's public API.

Heat maps of log10(loss(t)/loss(0)) over width x depth for Gaussian and
orthogonal init, and the critical-width slopes (figure1_summary.json).
The same as ``fastlin reproduce figure1``::

    python scripts/reproduce_figure1.py --preset quick --out results/figure1
    python scripts/reproduce_figure1.py --preset paper --out results/figure1-paper --executor dask
"""

import argparse

from fastlin import plots
from fastlin.experiments import (ResultStore, figure1_summary, format_summary, preset_grid,
                                 run_sweep, write_summary)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["quick", "paper"], default="quick")
    parser.add_argument("--out", default="results/figure1")
    parser.add_argument("--executor", default="threads", help="threads, processes or dask")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address")
    parser.add_argument("--backend", default=None, help="numpy, cpu or cuda (default: fastest)")
    args = parser.parse_args()

    grid = preset_grid("figure1", args.preset, backend=args.backend)
    run_sweep(grid, args.out, executor=args.executor, workers=args.workers,
              scheduler=args.scheduler)
    store = ResultStore(args.out)
    records = store.load_grid(grid)  # drawn from the saved results, no retraining
    summary = figure1_summary(grid, records)
    write_summary(summary, store.root / "figure1_summary.json")
    for path in plots.figure1(grid, records, store.root / "figure1"):
        print(path)
    print(format_summary(summary))


if __name__ == "__main__":
    main()
