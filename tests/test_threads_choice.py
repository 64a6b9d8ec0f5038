"""The timed choice between one thread and all threads (fastlin/kernels/threads.py)."""

import pytest

from fastlin.kernels.cpu.threads import Chooser
from fastlin.kernels.tuning import EXPLORE_EVERY


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


@pytest.mark.parametrize("dims", [[16, 64, 64, 3], [16, 63, 65, 3], [16, 64, 3], [5000, 8, 3], [16, 8, 8, 8, 3],
                                  [7, 4096, 1], [7, 4095, 1], [9, 3]])
def test_splits_says_which_nets_the_kernel_splits_among_threads(dims):
    """cpu.splits (used to compile only the kernels a sweep needs) agrees with the state's own choice."""
    import numba
    import numpy as np

    from fastlin.kernels import cpu, tuning

    rng = np.random.default_rng()
    V = [rng.standard_normal((dims[k + 1], dims[k])) for k in range(len(dims) - 1)]
    X, Y = rng.standard_normal((dims[0], 2)), rng.standard_normal((dims[-1], 2))
    state = cpu.init_state(V, X, Y, np.full(len(V), 1e-3))
    swept = [dims[k] * dims[k + 1] for k in range(1, len(dims) - 1)]
    assert cpu.splits(dims) == (max(swept, default=0) >= tuning.THREADS_MIN_WEIGHTS)
    assert state.ranges == (numba.get_num_threads() if cpu.splits(dims) else 1)
