"""lr = c / λ_max(Θ(0)) for c = 0.5 and 1 on nets of depth 4-32 and width 13-64 (the choice of ntk.AUTO_LR_SCALE).

    python bench/investigations/auto_lr.py [--steps 1000]

Trains Gaussian and orthogonal nets (seeds 0-2) on the paper's data with the
CPU kernel at both scales of the same net's rate and prints, per scale and
init, how many diverged, the median final loss(T)/loss(0) and how many fell
below 1e-3.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

import fastlin


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    X, Y = fastlin.paper_data(rng=0)
    final = collections.defaultdict(list)
    for depth in (4, 8, 32):
        for width in (13, 16, 32, 64):
            for init in ("gaussian", "orthogonal"):
                for seed in (0, 1, 2):
                    W = fastlin.init_weights(fastlin.network_dims(depth, width, 1024, 10), init, rng=seed)
                    lr_one = fastlin.ntk.auto_lr(W, X, 1.0)[0]
                    for scale in (0.5, 1.0):
                        r = fastlin.train(W, X, Y, lr=scale * lr_one, steps=args.steps)
                        final[scale, init].append(np.inf if r.status == "diverged" else r.relative_loss[-1])
    print(f"{'c':>4} {'init':>10} {'diverged':>9} {'median loss(T)/loss(0)':>23} {'below 1e-3':>11}")
    for (scale, init), values in sorted(final.items()):
        v = np.array(values)
        print(f"{scale:4g} {init:>10} {int(np.isinf(v).sum()):>5d}/{v.size:<3d} {np.median(v):23.2g} "
              f"{int((v < 1e-3).sum()):>7d}/{v.size}")


if __name__ == "__main__":
    main()
