"""bench/cores.py: the sharing measurement (one thread's multiply-adds against all threads' at once)."""

import numpy as np

from helpers import load_bench

cores = load_bench("investigations/cores")


def test_spin_does_the_multiply_adds_it_is_timed_for():
    """Eight chains a <- a x + y, n rounds each: the closed form a x^n + y (x^n - 1) / (x - 1)."""
    x, y = 1.0000001, 1e-9
    for n in (0, 1, 1000, 123457):
        want = sum(a * x**n + y * (x**n - 1) / (x - 1) for a in range(1, 9))
        assert np.isclose(cores._spin(n), want, rtol=1e-12), n


def test_sharing_times_one_thread_and_all_threads_every_round(monkeypatch):
    monkeypatch.setattr(cores, "SPIN_ITERATIONS", 20_000)
    times = cores.sharing(rounds=3)
    assert times.shape == (3, 2)
    assert np.all(np.isfinite(times)) and np.all(times > 0)
