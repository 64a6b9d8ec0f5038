"""The timed choice between one thread and all threads (fastlin/kernels/threads.py)."""

import pytest

from fastlin.kernels.threads import EXPLORE_EVERY, Chooser


@pytest.mark.parametrize("slower, looks", [(1.2, 4), (3.0, 1)])
def test_tries_both_then_takes_the_faster_and_now_and_then_the_other(slower, looks):
    """The slower choice is timed again every EXPLORE_EVERY chunks, 4x as rarely when far slower."""
    c = Chooser(ranges=2)
    assert c.next() == 2
    c.record(2, slower)
    assert c.next() == 1
    c.record(1, 1.0)
    picks = [c.next() for _ in range(4 * EXPLORE_EVERY)]
    assert picks.count(2) == looks and picks.count(1) == 4 * EXPLORE_EVERY - looks


def test_follows_a_change_of_the_machine():
    c = Chooser(ranges=2)
    c.next(), c.record(2, 2.0), c.next(), c.record(1, 1.0)
    assert c.next() == 1
    for _ in range(3):  # all threads became fast: seen when explored
        c.record(2, 0.2)
    assert c.next() == 2


def test_a_state_times_its_chunks_from_the_second_on():
    """The first chunk of a state (started on cores that idled while it was built) does not count."""
    import numpy as np

    from fastlin.kernels import cpu

    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((23, 5)), rng.standard_normal((4, 5))
    V = [rng.standard_normal((19, 23)) / 5, rng.standard_normal((17, 19)) / 5, rng.standard_normal((4, 17)) / 5]
    state = cpu.State(V, X, Y, np.full(3, 1e-3), ranges=2)
    assert state.chooser.rate == {}
    cpu.run_steps(state, np.empty(3), -np.inf)
    assert state.chooser.rate == {}
    cpu.run_steps(state, np.empty(3), -np.inf)
    assert len(state.chooser.rate) == 1 and next(iter(state.chooser.rate.values())) > 0
