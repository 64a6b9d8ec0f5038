"""The nonlinear kernel at batch 128: its two sweeps timed apart, and where two threads lose.

Three measurements on a tanh net of digits (d_0 = 64, d_L = 10, orthogonal
init, cross-entropy, SGD with batch B), each one process:

* ``sweeps``: one thread, the upward sweep alone and the downward sweep
  alone (each called in a loop, the weights not updated: lr = 0), min and
  median of 30 calls and the GFLOP/s of their products.
* ``modes``: whole steps, one thread (``state.mode = "one"``) and all
  threads (``"all"``) in turn, 7 states of 16 steps each.
* ``private``: all threads on the same split of the work with their own
  copy of every buffer (no data shared; the results are wrong, the timing
  is not) against the real, shared run, in turn.

    python bench/investigations/mlp_sweeps.py sweeps 64 128 128 float64
    python bench/investigations/mlp_sweeps.py modes 64 128 128 float32
    python bench/investigations/mlp_sweeps.py private 64 128 128 float64

On a shared host the two-thread figures move with the host's state: run a
command a few times, and compare versions by alternating processes. The
conclusions are in docs/performance.md ("Nonlinear chains").
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

import fastlin
from fastlin.kernels.cpu.threads import run_on_threads
from fastlin.kernels.mlp import ACTIVATIONS, LOSSES, Setup, cpu
from fastlin.kernels.mlp import sweeps as S
from fastlin.kernels.tuning import LINE_BYTES

STEPS = 16


def problem(L, m, B, dtype, lr=0.01):
    """(weights, biases, X, Y, setup) of a tanh net of depth L and width m on digits."""
    X, Y, _, _ = fastlin.digits(dtype=dtype)
    dims = [X.shape[0]] + [m] * (L - 1) + [Y.shape[0]]
    W, b = fastlin.init_mlp(dims, "orthogonal", rng=0, dtype=dtype)
    return W, b, X, Y, Setup(ACTIVATIONS["tanh"], LOSSES["cross_entropy"], lr, B, 0, True)


@numba.njit
def _upward(net, bufs, run, flags):
    S._forward_sweep(0, 1, flags, 0, net, bufs, run, bufs.H0, run.columns, True)


@numba.njit
def _downward(net, bufs, run):
    L = net.dims.size - 1
    lanes = LINE_BYTES // net.W.itemsize
    for k in range(L - 1, -1, -1):
        strips = S._strips(net, k)
        for s in range(strips):
            next_k, next_c = (k, (s + 1) * S.TILE_VECTORS * lanes) if s + 1 < strips else (k - 1, 0)
            S._down_strip(net, bufs, run, k, bufs.delta[(L - 1 - k) % 2], bufs.delta[(L - k) % 2], k > 0, s,
                          next_k, next_c)


def time_sweeps(W, b, X, Y, setup, calls=30):
    """{"up": seconds, "down": seconds}: min and median over ``calls`` of each sweep alone, one thread."""
    state = cpu.init_state(W, b, X, Y, setup._replace(lr=0.0))
    sweeps = {"up": lambda: _upward(state.net, state.bufs, state.run, state.flags),
              "down": lambda: _downward(state.net, state.bufs, state.run)}
    out = {}
    for name, sweep in sweeps.items():
        sweep()  # compile
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            sweep()
            times.append(time.perf_counter() - start)
        out[name] = (min(times), float(np.median(times)))
    return out


def step_seconds(W, b, X, Y, setup, mode):
    """Seconds per step of a fresh state's second chunk of STEPS steps, forced to one thread or all."""
    state = cpu.init_state(W, b, X, Y, setup)
    state.mode = mode
    loss = np.empty(STEPS)
    cpu.run_steps(state, loss)
    start = time.perf_counter()
    cpu.run_steps(state, loss)
    return (time.perf_counter() - start) / STEPS


def split_seconds(W, b, X, Y, setup, private):
    """Seconds per step on all threads, every thread on its own state's buffers if ``private``."""
    T = numba.get_num_threads()
    states = [cpu.init_state(W, b, X, Y, setup) for _ in range(T if private else 1)]
    flags = states[0].flags
    flags[:] = 0
    losses = [np.empty(STEPS) for _ in range(T)]

    def work(t):
        s = states[t % len(states)]
        S.run_thread(t, T, flags, s.net, s.bufs, s.data, s.run, losses[t], s.shared, s.result, False)

    start = time.perf_counter()
    run_on_threads(T, work)
    return (time.perf_counter() - start) / STEPS


def step_flops(dims, B):
    """Flops of one step's products: forward, backward (not layer 1) and update, 2 B per weight each."""
    weights = [dims[i] * dims[i + 1] for i in range(len(dims) - 1)]
    return 6.0 * B * sum(weights) - 2.0 * B * weights[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["sweeps", "modes", "private"])
    parser.add_argument("L", type=int)
    parser.add_argument("m", type=int)
    parser.add_argument("B", type=int)
    parser.add_argument("dtype", choices=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    W, b, X, Y, setup = problem(args.L, args.m, args.B, args.dtype)
    dims = [X.shape[0]] + [w.shape[0] for w in W]
    if args.what == "sweeps":
        forward = 2.0 * args.B * sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
        flops = {"up": forward, "down": step_flops(dims, args.B) - forward}
        for name, (best, median) in time_sweeps(W, b, X, Y, setup).items():
            print(f"{name:>5}: {best * 1e3:.2f} ms (median {median * 1e3:.2f}), {flops[name] / best / 1e9:.1f} GFLOP/s")
        return
    choices = {"modes": {"one": lambda: step_seconds(W, b, X, Y, setup, "one"),
                         "all": lambda: step_seconds(W, b, X, Y, setup, "all")},
               "private": {"private": lambda: split_seconds(W, b, X, Y, setup, True),
                           "shared": lambda: split_seconds(W, b, X, Y, setup, False)}}[args.what]
    for run in choices.values():
        run()  # compile
    times = {name: [] for name in choices}
    for _ in range(args.repeats):
        for name, run in choices.items():
            times[name].append(run() * 1e3)
    for name, v in times.items():
        print(f"{name:>8}: median {np.median(v):.2f} ms/step, min {min(v):.2f}  ({', '.join(f'{x:.1f}' for x in v)})")


if __name__ == "__main__":
    main()
