"""The ``fastlin`` command."""

from __future__ import annotations

import argparse
import sys

import numpy as np


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
    from . import init_weights, network_dims, paper_data, theorem_lr, train

    X, Y = paper_data(rng=args.data_seed)
    dims = network_dims(args.depth, args.width, X.shape[0], Y.shape[0])
    lr = args.lr if args.lr is not None else args.lr_scale * theorem_lr(X, args.depth, Y.shape[0])
    weights = init_weights(dims, args.init, rng=args.seed)
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


def build_parser() -> argparse.ArgumentParser:
    from .train import BACKENDS, DEFAULT_BACKEND

    parser = argparse.ArgumentParser(prog="fastlin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one net on the paper's data and print its relative loss")
    p.add_argument("--depth", type=int, required=True, help="number of layers L")
    p.add_argument("--width", type=int, required=True, help="hidden width m")
    p.add_argument("--init", choices=["orthogonal", "gaussian"], required=True)
    p.add_argument("--steps", type=int, default=1000, help="GD steps (default 1000)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate on the raw weights (default: the Theorem 4.1 rate)")
    p.add_argument("--lr-scale", type=float, default=1.0,
                   help="multiple of the Theorem 4.1 rate when --lr is not given (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight init")
    p.add_argument("--data-seed", type=int, default=0, help="seed of X and W* (default 0)")
    p.add_argument("--backend", choices=list(BACKENDS), default=DEFAULT_BACKEND)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
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
