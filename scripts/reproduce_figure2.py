"""Reproduce Figure 2 of Hu, Xiao & Pennington (ICLR 2020) with fastlin's public API.

Relative loss against GD step (log-log) at three depths, one curve per
width, Gaussian init solid and orthogonal init dashed. The same as
``fastlin reproduce figure2``::

    python scripts/reproduce_figure2.py --preset quick --out results/figure2
"""

import argparse

from fastlin import plots
from fastlin.experiments import ResultStore, preset_grid, run_sweep


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["quick", "paper"], default="quick")
    parser.add_argument("--out", default="results/figure2")
    parser.add_argument("--executor", default="threads", help="threads, processes or dask")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address")
    parser.add_argument("--backend", default=None, help="numpy, cpu or cuda (default: fastest)")
    args = parser.parse_args()

    grid = preset_grid("figure2", args.preset, backend=args.backend)
    run_sweep(grid, args.out, executor=args.executor, workers=args.workers,
              scheduler=args.scheduler)
    store = ResultStore(args.out)
    for path in plots.figure2(grid, store.load_grid(grid), store.root / "figure2"):
        print(path)


if __name__ == "__main__":
    main()
