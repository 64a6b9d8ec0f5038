"""The barrier that lets the threads of a chunk meet between layers, and the chunk on several Python threads."""

import os

import numba
import numpy as np
import pytest

from fastlin.kernels import cpu
from fastlin.kernels.cpu import threads as sync
from fastlin.kernels.cpu.threads import FLAG_STRIDE
from helpers import run_in_threads


def fresh_flags(T):
    return np.zeros(T * FLAG_STRIDE, dtype=np.int64)


@numba.njit(nogil=True)
def ping(flags, t, T, seen, rounds):
    """Each round every thread writes its mark, meets the others, reads theirs, meets again."""
    epoch = 0
    for e in range(1, rounds + 1):
        seen[t, t] = e
        epoch = sync.barrier(flags, t, T, epoch)
        for u in range(T):
            if seen[u, u] != e:
                seen[t, u] = -e  # a mark missing after the barrier
        epoch = sync.barrier(flags, t, T, epoch)
    return epoch


def test_barrier_makes_every_write_before_it_visible_after_it():
    T, rounds = 3, 2000
    flags, seen = fresh_flags(T), np.zeros((T, T), dtype=np.int64)
    epochs = run_in_threads(lambda t: ping(flags, t, T, seen, rounds), T)
    assert epochs == [2 * rounds] * T
    assert np.array_equal(np.diag(seen), [rounds] * T) and seen.min() >= 0


def small_net():
    X = np.random.default_rng(0).standard_normal((20, 6))
    Y = np.random.default_rng(1).standard_normal((3, 6))
    rng = np.random.default_rng(2)
    V = [rng.standard_normal((16, 20)) / 5, rng.standard_normal((16, 16)) / 4,
         rng.standard_normal((3, 16)) / 4]
    return V, X, Y, np.full(3, 0.01)


def test_more_kernel_threads_than_cores_finish_with_the_same_losses(monkeypatch):
    """Threads that wait yield their core, so a chunk on more threads than cores still finishes, bit for bit."""
    V, X, Y, eta = small_net()
    want = np.empty(9)
    one = cpu.State([v.copy() for v in V], X, Y, eta, ranges=2)
    one.mode = "one"
    cpu.run_steps(one, want, -np.inf)
    threads = 2 * (os.cpu_count() or 1) + 1
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", threads)
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    many = cpu.State([v.copy() for v in V], X, Y, eta, ranges=threads)
    many.mode = "all"
    got = np.empty(9)
    assert cpu.run_steps(many, got, -np.inf) == (9, 0)
    assert np.array_equal(got, want)


def test_an_error_in_a_kernel_thread_reaches_the_caller(monkeypatch):
    V, X, Y, eta = small_net()
    state = cpu.State([v.copy() for v in V], X, Y, eta, ranges=2)
    state.mode = "all"
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    calls = []

    def fails_on_thread_one(t, *args):
        calls.append(t)
        if t == 1:
            raise RuntimeError("thread 1 failed")

    monkeypatch.setattr(cpu, "run_chunk", fails_on_thread_one)
    with pytest.raises(RuntimeError, match="thread 1 failed"):
        cpu.run_steps(state, np.empty(3), -np.inf)
    assert sorted(calls) == [0, 1]
