"""How the cores of this machine behave for the CPU kernel's threads: barrier cost, idle-core slowdown, sharing.

1. ``cpu.threads.barrier`` alone, 10^6 times on all threads (one parallel region):
   ns per barrier. About 0.04-0.09 us when the VM's vCPUs are close, 0.34-0.36
   when far apart (the host switches between the two within minutes).
2. fastlin-cpu at L64 m256 on all threads (4-step chunks): ms/step of the
   first chunk right after ``init_state`` (cores idled while Python built
   the state), and of the second chunk of another fresh state after 50 ms of
   all cores spinning (``machine.settle_cores``). The gap is why the
   benchmark settles the cores before each timed round and why a state's
   first chunk is not timed by the kernel's choice of threads.
3. What the other cores add: a multiply-add loop in registers (no memory
   traffic) timed on one thread, then the same loop on every thread at once
   (one parallel region, so its time is the slowest thread's, as for a
   kernel whose threads meet at barriers). The ratio all / one is 1.0 where
   each vCPU is a core of its own and 2.0 where two vCPUs share one core's
   arithmetic units (or one of them is not running); per round, the two in
   alternation.

    python bench/investigations/cores.py
"""

import pathlib
import sys
import time

import numba
import numpy as np
from numba import prange

import fastlin
from fastlin.kernels import cpu
from fastlin.kernels.cpu import threads as sync
from fastlin.model import layer_rates, to_normalized

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import machine  # noqa: E402

BARRIERS = 1_000_000
SPIN_ITERATIONS = 4_000_000  # ~5 ms of one core's multiply-adds on the 2-core machine


@numba.njit(parallel=True, cache=False)
def _barriers(flags, T, count):
    for t in prange(T):
        epoch = 0
        for _ in range(count):
            epoch = sync.barrier(flags, t, T, epoch)


def barrier_ns():
    T = numba.get_num_threads()
    flags = np.zeros((T + 2) * sync.FLAG_STRIDE, dtype=np.int64)
    _barriers(flags, T, 10)
    flags[:] = 0
    start = time.perf_counter()
    _barriers(flags, T, BARRIERS)
    return T, (time.perf_counter() - start) / BARRIERS * 1e9


@numba.njit(cache=False, fastmath={"contract"})
def _spin(n):
    """n rounds of eight independent multiply-add chains, in registers."""
    x, y = 1.0000001, 1e-9
    a0, a1, a2, a3, a4, a5, a6, a7 = 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0
    for _ in range(n):
        a0, a1, a2, a3 = a0 * x + y, a1 * x + y, a2 * x + y, a3 * x + y
        a4, a5, a6, a7 = a4 * x + y, a5 * x + y, a6 * x + y, a7 * x + y
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7


@numba.njit(parallel=True, cache=False)
def _spin_all(n, out):
    for t in prange(out.size):
        out[t] = _spin(n)


def sharing(rounds=15):
    """Seconds of ``_spin`` on one thread and on all threads at once, per round: array (rounds, 2)."""
    out = np.zeros(numba.get_num_threads())
    _spin(10)
    _spin_all(10, out)
    times = np.zeros((rounds, 2))
    for i in range(rounds):
        start = time.perf_counter()
        _spin(SPIN_ITERATIONS)
        times[i, 0] = time.perf_counter() - start
        start = time.perf_counter()
        _spin_all(SPIN_ITERATIONS, out)
        times[i, 1] = time.perf_counter() - start
    return times


def chunk_ms(state, k=4):
    loss = np.empty(k)
    start = time.perf_counter()
    cpu.run_steps(state, loss, -np.inf)
    return (time.perf_counter() - start) / k * 1e3


def idle_and_settled(L=64, m=256, trials=4):
    X, Y = fastlin.paper_data(rng=0)
    dims = fastlin.network_dims(L, m, X.shape[0], Y.shape[0])
    V = to_normalized(fastlin.init_weights(dims, "orthogonal", rng=1), dims, np.float64)
    eta = layer_rates(0.5 * fastlin.theorem_lr(X, L, Y.shape[0]), dims)

    def fresh():
        state = cpu.init_state([v.copy() for v in V], X, Y, eta)
        state.mode = "all"
        return state

    chunk_ms(fresh())  # compile / load
    rows = []
    for _ in range(trials):
        idle = chunk_ms(fresh())
        state = fresh()
        chunk_ms(state)
        machine.settle_cores()
        rows.append((idle, chunk_ms(state)))
    return rows


def main():
    T, ns = barrier_ns()
    print(f"sync.barrier, {T} threads, {BARRIERS} times: {ns:.0f} ns per barrier")
    print("fastlin-cpu L64 m256, all threads, ms/step: first chunk after init_state | "
          "second chunk after settling the cores")
    for idle, settled in idle_and_settled():
        print(f"  {idle:6.1f} | {settled:6.1f}")
    times = sharing()
    ratio = times[:, 1] / times[:, 0]
    print(f"multiply-adds in registers, ms: one thread min {times[:, 0].min() * 1e3:.1f} "
          f"median {np.median(times[:, 0]) * 1e3:.1f}; {T} threads at once min {times[:, 1].min() * 1e3:.1f} "
          f"median {np.median(times[:, 1]) * 1e3:.1f}")
    print(f"  all / one per round (1.0: a core each; 2.0: two share one): min {ratio.min():.2f} "
          f"median {np.median(ratio):.2f} max {ratio.max():.2f}")


if __name__ == "__main__":
    main()
