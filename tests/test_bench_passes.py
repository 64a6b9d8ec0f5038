"""bench/passes.py: single passes timed with the direction each one ran."""

import numpy as np
import pytest

from helpers import load_bench

passes = load_bench("investigations/passes")


def test_passes_alternate_and_each_is_timed_under_its_direction():
    from fastlin.kernels import cpu
    problem = passes.peers.make_problem(3, 24, np.float64)
    state = cpu.init_state([v.copy() for v in problem[0]], *problem[1:])
    phases = [passes.timed_pass(cpu, state)[0] for _ in range(3)]
    assert phases == [0, 1, 0]
    times = passes.time_passes(problem, rounds=2)
    assert set(times) == {"one", "all"}
    for t in times.values():
        assert t.shape == (2, 2) and np.all(t > 0)


def test_a_diverging_net_stops_the_timing_with_a_message():
    from fastlin.kernels import cpu
    V, X, Y, eta = passes.peers.make_problem(2, 8, np.float64)
    state = cpu.init_state([v.copy() for v in V], X, Y, eta * 1e6)
    with pytest.raises(SystemExit, match="diverged"):
        for _ in range(200):
            passes.timed_pass(cpu, state)
