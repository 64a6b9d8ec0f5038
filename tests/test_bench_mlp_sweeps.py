"""bench/investigations/mlp_sweeps.py: the nonlinear kernel's sweeps and thread splits timed."""

import numpy as np

from fastlin.kernels.mlp import cpu
from helpers import load_bench

mlp_sweeps = load_bench("investigations/mlp_sweeps")


def test_sweeps_are_timed_apart_and_leave_the_weights_alone():
    W, b, X, Y, setup = mlp_sweeps.problem(3, 24, 16, "float64")
    times = mlp_sweeps.time_sweeps(W, b, X, Y, setup, calls=2)
    assert set(times) == {"up", "down"}
    for best, median in times.values():
        assert 0 < best <= median
    state = cpu.init_state(W, b, X, Y, setup._replace(lr=0.0))
    before = cpu.weights(state)
    mlp_sweeps._downward(state.net, state.bufs, state.run)  # lr = 0: the update adds nothing
    for old, new in zip(before, cpu.weights(state)):
        np.testing.assert_array_equal(old, new)


def test_modes_and_splits_are_timed():
    W, b, X, Y, setup = mlp_sweeps.problem(3, 24, 16, "float32")
    for mode in ("one", "all"):
        assert mlp_sweeps.step_seconds(W, b, X, Y, setup, mode) > 0
    for private in (True, False):
        assert mlp_sweeps.split_seconds(W, b, X, Y, setup, private) > 0
