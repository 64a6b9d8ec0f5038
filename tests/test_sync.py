"""The start handshake and barrier that let a chunk of steps run in one parallel region."""

import numba
import numpy as np

from fastlin.kernels import cpu
from fastlin.kernels.cpu import threads as sync
from fastlin.kernels.cpu.threads import FLAG_STRIDE
from helpers import run_in_threads


def fresh_flags(T):
    return np.zeros((T + 2) * FLAG_STRIDE, dtype=np.int64)


def test_join_gives_up_for_all_when_threads_run_one_after_another():
    flags = fresh_flags(2)
    assert not sync.join(flags, 0, 2, 1000)  # the other never came
    assert not sync.join(flags, 1, 2, 1000)  # it comes after the verdict and follows it


def test_join_agrees_when_all_threads_run_at_once():
    flags = fresh_flags(3)
    assert run_in_threads(lambda t: sync.join(flags, t, 3, 1 << 40), 3) == [True, True, True]


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


def test_threads_that_did_not_all_run_fall_back_to_one_thread(monkeypatch):
    """If the handshake fails the chunk runs on one thread, with the same losses."""
    X = np.random.default_rng(0).standard_normal((20, 6))
    Y = np.random.default_rng(1).standard_normal((3, 6))
    rng = np.random.default_rng(2)
    V = [rng.standard_normal((16, 20)) / 5, rng.standard_normal((16, 16)) / 4,
         rng.standard_normal((3, 16)) / 4]
    eta = np.full(3, 0.01)
    want = np.empty(9)
    serial = cpu.State([v.copy() for v in V], X, Y, eta, ranges=2)
    serial.mode = "one"
    cpu.run_steps(serial, want, -np.inf)

    def no_threads(flags, net, data, bufs, phase, loss_out, loss_stop, results, R):
        results[:, 0] = -1

    monkeypatch.setattr(cpu, "run_chunk_parallel", no_threads)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    state = cpu.State([v.copy() for v in V], X, Y, eta, ranges=2)
    state.mode = "all"
    got = np.empty(9)
    assert cpu.run_steps(state, got, -np.inf) == (9, 0)
    assert state.mode == "one"
    assert np.array_equal(got, want)
