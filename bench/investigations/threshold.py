"""One thread or all threads, by width: THREADS_MIN_WEIGHTS in fastlin/kernels/tuning.py.

For square hidden layers of width m (dx = m, dy = 10, n = 16, L = 8) time a GD
step on one thread and on all threads (one parallel region per chunk of
steps, barriers between layers; both over the same row ranges), and print the
ratio. On a machine whose cores talk fast all threads win from small m; on
one whose cores talk slowly only from large m: run it a few times (the
kernel itself chooses per net shape by timing its chunks).

    python bench/investigations/threshold.py
"""

import time

import numba
import numpy as np

import fastlin
from fastlin.kernels import cpu
from fastlin.model import layer_rates, to_normalized


def step_seconds(V, X, Y, eta, mode, steps=20, repeats=7):
    state = cpu.State([v.copy() for v in V], X, Y, eta, ranges=numba.get_num_threads())
    state.mode = mode
    loss = np.empty(steps)
    cpu.run_steps(state, loss[:2], -np.inf)  # compile / warm up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        cpu.run_steps(state, loss, -np.inf)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main():
    print(f"{'m':>5} {'weights/layer':>14} {'1 thread us/layer':>16} {'all threads us/layer':>18} {'speed-up':>9}")
    for m in (8, 12, 16, 24, 32, 48, 64, 96, 128, 256):
        L = 8
        X, Y = fastlin.paper_data(rng=0, dx=m, n=16, dy=10)
        dims = fastlin.network_dims(L, m, m, 10)
        V = to_normalized(fastlin.init_weights(dims, "orthogonal", rng=1), dims, np.float64)
        eta = layer_rates(0.1 * fastlin.theorem_lr(X, L, 10), dims)
        ser = step_seconds(V, X, Y, eta, "one") / L
        par = step_seconds(V, X, Y, eta, "all") / L
        print(f"{m:>5} {m * m:>14} {1e6 * ser:>16.2f} {1e6 * par:>18.2f} {ser / par:>9.2f}")


if __name__ == "__main__":
    main()
