"""Steady-state time of one full-batch GD step on the CPU: fastlin kernels vs peers.

Parametrized by size (L, m) x backend x dtype on the paper's data shape
(X 1024 x 16, Y 10 x 16). Backends:

* ``fastlin-cpu``: fastlin.kernels.cpu (Numba), when importable;
* ``fastlin-numpy``: fastlin.kernels.reference (the textbook NumPy step);
* ``numpy``, ``torch``, ``jax``: the peers of bench/peers.py (torch and jax
  when installed, e.g. ``pip install -e '.[peers]'``).

Each benchmark first checks its backend's loss history (the first few steps)
against fastlin's NumPy reference (rtol 1e-10 in float64, 1e-4 in float32) so a wrong
implementation cannot be fast; that first call also gives the first-call
(compile) time, reported apart. A timed round is one call that runs a chunk
of ``steps_per_round`` steps from the initial weights (re-set, untimed,
before each round); the report divides by the chunk length, so Python's
per-call overhead is outside the per-step time of the fastlin kernels.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import time

import numpy as np
import pytest

import machine
import peers
import report

SIZES = [(32, 32), (128, 64), (64, 256), (16, 1024)]
# Steps per timed round: long enough that one call amortizes Python overhead,
# short enough that the slowest peer fits a few rounds in the time budget.
STEPS_PER_ROUND = {(32, 32): 64, (128, 64): 16, (64, 256): 4, (16, 1024): 2}
DTYPES = ["float64", "float32"]
RTOL = {"float64": 1e-10, "float32": 1e-4}
KERNELS = {"fastlin-cpu": "fastlin.kernels.cpu", "fastlin-numpy": "fastlin.kernels.reference"}
BACKENDS = list(KERNELS) + list(peers.PEERS)
MIN_ROUNDS, MAX_ROUNDS = 3, 500
# Steps compared with the reference. Only a few: at the Theorem 4.1 rate the
# narrow nets here (m < d_x, outside the theorem) oscillate, and rounding
# differences of 1e-16 grow to 1e-5 within ~40 steps for any two correct
# implementations.
CHECK_STEPS = 4


class KernelRunner:
    """A fastlin backend module driven through its kernel interface (fastlin/kernels/__init__.py).

    ``reset()`` builds a fresh state from copies of the initial weights;
    ``run(k)`` is one ``run_steps`` call of k steps, returning l(t+1)..l(t+k).
    """

    losses_after_step = True

    def __init__(self, module, V, X, Y, eta):
        self.kernel = module
        self.V0, self.X, self.Y, self.eta = V, X, Y, eta
        self.state = None

    def reset(self):
        self.state = self.kernel.init_state([Vi.copy() for Vi in self.V0], self.X, self.Y, self.eta)

    def run(self, k):
        loss = np.empty(k)
        done, status = self.kernel.run_steps(self.state, loss, -math.inf)
        assert done == k, f"run_steps stopped after {done} of {k} steps (status {status})"
        return loss


def backend_available(backend: str) -> bool:
    if backend in KERNELS:
        return importlib.util.find_spec(KERNELS[backend]) is not None
    return peers.available(backend)


def make_runner(backend, V, X, Y, eta):
    if backend in KERNELS:
        try:
            module = importlib.import_module(KERNELS[backend])
        except ImportError as exc:
            pytest.skip(f"{backend} not importable: {exc}")
        return KernelRunner(module, V, X, Y, eta)
    runner = peers.PEERS[backend](V, X, Y, eta)
    runner.losses_after_step = False  # peers report the loss of each step's forward pass
    return runner


_problems: dict = {}
_references: dict = {}


def problem(L, m, dtype):
    key = (L, m, dtype)
    if key not in _problems:
        _problems[key] = peers.make_problem(L, m, dtype)
    return _problems[key]


def reference_history(L, m, dtype, k):
    """l(0), ..., l(k) from fastlin's NumPy reference (cached per size, dtype and k)."""
    key = (L, m, dtype, k)
    if key not in _references:
        _references[key] = peers.reference_losses(*problem(L, m, dtype), k + 1)
    return _references[key]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES, ids=[f"L{L}-m{m}" for L, m in SIZES])
def test_gd_step(benchmark, request, size, backend, dtype):
    if not backend_available(backend):
        pytest.skip(f"{backend} is not installed")
    L, m = size
    k = STEPS_PER_ROUND[size]
    V, X, Y, eta = problem(L, m, dtype)
    runner = make_runner(backend, V, X, Y, eta)

    # First call: compile (Numba / XLA) or first-use costs plus k steps; it
    # is also the correctness check against the reference.
    runner.reset()
    start = time.perf_counter()
    losses = runner.run(k)
    first_call_s = time.perf_counter() - start
    checked = min(k, CHECK_STEPS)
    expected = reference_history(L, m, dtype, checked)
    expected = expected[1:] if runner.losses_after_step else expected[:-1]
    np.testing.assert_allclose(losses[:checked], expected, rtol=RTOL[dtype],
                               err_msg=f"{backend} disagrees with fastlin's NumPy reference")

    # Warm-up call, also used to size the number of timed rounds.
    rounds = machine.rounds_for(runner, k, request.config.getoption("--fastlin-seconds"), MIN_ROUNDS, MAX_ROUNDS)

    benchmark.group = f"L{L} m{m} {dtype}, time per round of {k} steps"
    floor = report.step_floor([X.shape[0]] + [Vi.shape[0] for Vi in V], X.shape[1], Y.shape[0],
                              np.dtype(dtype).itemsize)
    info = {"L": L, "m": m, "dtype": dtype, "backend": backend, "steps_per_round": k,
            "first_call_s": first_call_s, **floor}
    benchmark.extra_info.update(info)
    def setup():
        # Fresh state, k untimed steps on it, then all cores busy for a moment:
        # on this VM cores that idled while the state was built run the next
        # tens of milliseconds up to 2x slower (machine.SETTLE_SECONDS), a
        # start-up cost, not the steady state.
        runner.reset()
        runner.run(k)
        machine.settle_cores()

    with machine.OtherLoad() as others:
        benchmark.pedantic(runner.run, args=(k,), setup=setup, rounds=rounds, warmup_rounds=0)
    benchmark.extra_info["other_cores"] = info["other_cores"] = others.cores
    if benchmark.stats:
        report.RESULTS.append({**info, "min_s": benchmark.stats.stats.min,
                               "median_s": benchmark.stats.stats.median})
