"""The fixed cost of ``fastlin.train`` around its steps, against one ``np.copy`` of the weights, in the same run.

``train(..., steps=0)`` validates the problem, normalizes the weights into
the kernel's layout (fresh memory, like the copy's), forms the chains of
step 0 and scales the layout back in place as the raw weights it returns:
it moves every weight about twice plus the chains' reads. The benchmark
times it at (L, m) = (16, 1024) on the paper's data (16.8 M weights) next
to a plain copy of the same weights, and records their ratio
(``extra_info["x_copy"]``; the target is about 2), and the median user and
system CPU time per call (``user_ms``, ``sys_ms``: system time is mostly
the operating system handing out and zeroing fresh pages).

    python -m pytest bench/test_bench_fixed_cost.py --benchmark-only
"""

from __future__ import annotations

import resource
import time

import numpy as np
import pytest

import fastlin

L, M = 16, 1024


@pytest.fixture(scope="module")
def problem():
    X, Y = fastlin.paper_data(rng=0)
    W = fastlin.init_weights(fastlin.network_dims(L, M, X.shape[0], Y.shape[0]), "gaussian", rng=0)
    fastlin.prepare("cpu", "float64")
    return W, X, Y


def _median_seconds(fn, rounds=9):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@pytest.mark.parametrize("what", ["np.copy of the weights", "train(steps=0)", "train(steps=1)"])
def test_fixed_cost(benchmark, problem, what):
    W, X, Y = problem
    benchmark.group = f"fixed cost, L{L} m{M} (16.8 M weights)"
    copy = lambda: [w.copy() for w in W]  # noqa: E731
    calls = {"np.copy of the weights": copy,
             "train(steps=0)": lambda: fastlin.train(W, X, Y, lr=1e-6, steps=0),
             "train(steps=1)": lambda: fastlin.train(W, X, Y, lr=1e-6, steps=1)}
    cpu = []

    def timed():
        before = resource.getrusage(resource.RUSAGE_SELF)
        out = calls[what]()
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
        return out

    result = benchmark.pedantic(timed, rounds=9, warmup_rounds=1)
    user, system = np.median(np.array(cpu), axis=0)
    benchmark.extra_info.update(user_ms=1e3 * user, sys_ms=1e3 * system)
    if what != "np.copy of the weights":
        assert result.status == "completed" and len(result.weights) == L
        benchmark.extra_info["x_copy"] = benchmark.stats.stats.median / _median_seconds(copy)
