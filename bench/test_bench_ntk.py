"""Cost of recording the NTK Θ(t) during training (issue 22): ``train(..., ntk=steps)`` vs plain.

A 1000-step run of the CPU kernel on the paper's data (X 1024 x 16, Y 10 x
16, orthogonal init, half the Theorem 4.1 rate), without and with Θ(t)
recorded at 20 log-spaced steps (0, 1, 2, 3, 5, ..., 1000), at
(L, m) = (64, 256) and (16, 1024). Each recorded step reads the chains
(one side from the kernel's cache, the other recomputed: L m² min-side
flops) and forms G_i = A_iᵀA_i and H_i = B_iB_iᵀ; the target is at most 5 %
of the run. Rounds of the two variants are timed in separate benchmarks of
one group, so pytest-benchmark's table shows them side by side; the
``overhead`` of the recording run (its median over the plain run's) is put
in its extra info once both have run.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import machine

SIZES = [(64, 256), (16, 1024)]
STEPS = 1000
RECORDED = 20
MIN_ROUNDS = 3
_medians: dict = {}


def ntk_steps(steps: int = STEPS, count: int = RECORDED) -> list[int]:
    """``count`` distinct log-spaced steps from 0 to ``steps`` (0 and ``steps`` included)."""
    from fastlin.experiments import log_spaced_ints

    num = count - 1
    while True:
        out = [0] + log_spaced_ints(1, steps, num)
        if len(out) >= count:
            return out
        num += 1


def problem(L, m):
    import fastlin

    X, Y = fastlin.paper_data(rng=0)
    W = fastlin.init_weights(fastlin.network_dims(L, m, X.shape[0], Y.shape[0]), "orthogonal", rng=0)
    return W, X, Y, 0.5 * fastlin.theorem_lr(X, L, Y.shape[0])


@pytest.mark.parametrize("recording", ["plain", "ntk"])
@pytest.mark.parametrize("size", SIZES, ids=[f"L{L}-m{m}" for L, m in SIZES])
def test_train_with_and_without_ntk(benchmark, request, size, recording):
    import fastlin

    L, m = size
    W, X, Y, lr = problem(L, m)
    steps = ntk_steps() if recording == "ntk" else None
    assert steps is None or len(steps) == RECORDED

    def run():
        return fastlin.train(W, X, Y, lr=lr, steps=STEPS, backend="cpu", ntk=steps)

    start = time.perf_counter()
    first = run()  # compiles the kernels (or loads them from Numba's cache)
    first_call_s = time.perf_counter() - start
    assert first.status == "completed"
    if steps is not None:
        assert sorted(first.ntk) == steps and first.ntk[0].G.dtype == np.float64
    budget = request.config.getoption("--fastlin-seconds")
    rounds = max(MIN_ROUNDS, int(budget // max(first.seconds, 1e-3)))
    benchmark.group = f"L{L} m{m}, {STEPS} GD steps, Θ(t) at {RECORDED} steps or none"
    benchmark.extra_info.update({"L": L, "m": m, "steps": STEPS, "recording": recording,
                                 "recorded_steps": 0 if steps is None else len(steps),
                                 "first_call_s": first_call_s})
    with machine.OtherLoad() as others:
        benchmark.pedantic(run, setup=machine.settle_cores, rounds=rounds, warmup_rounds=0)
    benchmark.extra_info["other_cores"] = others.cores
    if benchmark.stats:
        _medians[size, recording] = benchmark.stats.stats.median
        if recording == "ntk" and (size, "plain") in _medians:
            benchmark.extra_info["overhead"] = _medians[size, "ntk"] / _medians[size, "plain"] - 1
