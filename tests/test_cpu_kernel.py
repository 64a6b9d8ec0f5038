"""The Numba one-pass kernel (backend="cpu") against the NumPy reference (issue: CPU kernel)."""

from unittest import mock

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlin
from fastlin.kernels import cpu, host, reference, tuning
from fastlin.kernels.cpu import layout, passes, strips, tiles
from fastlin.model import layer_rates, to_normalized
from helpers import random_problem, run_in_threads


def loss_rel_err(a, b, loss0, floor=1e-8):
    """Max relative difference of two loss histories, against max(loss(t), floor * loss(0)).

    Once f matches Y to many digits, E = f - Y carries an absolute rounding
    error of eps ||Y|| in any implementation, so the loss itself is only known
    to about eps ||Y|| / ||E|| relative; the floor keeps that out of the test
    (at loss = 1e-8 loss(0) it is still ~1e-12).
    """
    assert a.shape == b.shape, "the runs stopped at different steps"
    finite = np.isfinite(b)
    assert np.array_equal(finite, np.isfinite(a)), "the runs diverged at different steps"
    return np.max(np.abs(a - b)[finite] / np.maximum(np.abs(b[finite]), floor * loss0))


@st.composite
def problems(draw):
    """Random shapes and inits, away from the one degenerate case.

    Width-1 or single-sample nets can pass next to the saddle at W = 0, where
    GD amplifies any rounding difference exponentially (seen: 1e-16 -> 1e-9
    for dims [1, 1, 1], n = 1); that is a property of the dynamics, not of a
    kernel, so widths and sample counts start at 2 here. L = 1 regression
    with d = 1 is covered separately.
    """
    L = draw(st.sampled_from([1, 2, 3, 10, 50]))
    m = draw(st.integers(2, 24))
    dx = draw(st.integers(1, 40))
    dy = draw(st.integers(1, 12))
    n = draw(st.integers(2, 20))
    if draw(st.booleans()):
        m = draw(st.sampled_from([max(2, dy), max(2, n - 1)]))  # m = dy, or m < n
    init = draw(st.sampled_from(["gaussian", "orthogonal"]))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(0.1, 0.8))
    parallel = draw(st.booleans())  # all threads sweep every layer, whatever its size
    return fastlin.network_dims(L, m, dx, dy), n, init, seed, scale, parallel


def run_kernel(kernel, V, X, Y, eta, steps, force_parallel=False):
    if force_parallel:  # two row ranges per layer, both threads on every chunk
        state = kernel.State([v.copy() for v in V], X, Y, eta, ranges=2)
        state.mode = "all"
    else:
        state = kernel.init_state([v.copy() for v in V], X, Y, eta)
    loss = np.full(steps + 1, np.nan)
    loss[0] = state.loss0
    done, status = kernel.run_steps(state, loss[1:], -np.inf)
    return loss[:done + 1], kernel.weights(state), status


def run_both(dims, n, init, seed, scale, steps, dtype, force_parallel=False):
    """Train one random problem with the cpu kernel and the reference.

    Also returns the reference's own sensitivity: the relative change of its
    loss history when every weight is perturbed by one unit in the last place.
    Small, poorly conditioned nets (a width-2 bottleneck passing a saddle)
    amplify rounding by orders of magnitude; the tolerance allows 100 times
    that amplification on top of 1e-10, so it stays 1e-10 on ordinary nets.
    """
    rng = np.random.default_rng(seed)
    Ws, X, Y = random_problem(rng, dims, n, init, dtype=dtype)
    lr = scale * fastlin.theorem_lr(X.astype(np.float64), len(dims) - 1, dims[-1])
    V = to_normalized(Ws, dims, dtype)
    eta = layer_rates(lr, dims)
    out = {"cpu": run_kernel(cpu, V, X, Y, eta, steps, force_parallel),
           "numpy": run_kernel(reference, V, X, Y, eta, steps)}
    # One unit in the last place of the working dtype (both arguments in it:
    # a float64 direction would nudge in float64 and round back to float32).
    nudged = [np.nextafter(v, np.where(rng.random(v.shape) < 0.5, -np.inf, np.inf).astype(v.dtype)) for v in V]
    loss_n = run_kernel(reference, nudged, X, Y, eta, steps)[0]
    loss_r = out["numpy"][0]
    k = min(loss_n.size, loss_r.size)
    both = np.isfinite(loss_n[:k]) & np.isfinite(loss_r[:k])
    floor = 1e-8 if np.dtype(dtype) == np.float64 else 1e-4
    out["sensitivity"] = np.max(np.abs(loss_n[:k] - loss_r[:k])[both]
                                / np.maximum(np.abs(loss_r[:k][both]), floor * loss_r[0]))
    return out


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=40, **SETTINGS)
@given(problems())
def test_cpu_float64_matches_reference(problem):
    dims, n, init, seed, scale, parallel = problem
    out = run_both(dims, n, init, seed, scale, steps=51, dtype=np.float64, force_parallel=parallel)
    (loss_c, W_c, status_c), (loss_r, W_r, status_r) = out["cpu"], out["numpy"]
    tol = 1e-10 + 100 * out["sensitivity"]
    assert status_c == status_r
    assert loss_rel_err(loss_c, loss_r, loss_r[0]) < tol
    scale = max(np.max(np.abs(b)) for b in W_r)
    for a, b in zip(W_c, W_r):
        assert np.max(np.abs(a - b)) <= tol * scale


@settings(max_examples=15, **SETTINGS)
@given(problems())
def test_cpu_float32_matches_reference(problem):
    dims, n, init, seed, scale, parallel = problem
    out = run_both(dims, n, init, seed, scale, steps=20, dtype=np.float32, force_parallel=parallel)
    loss_c, loss_r = out["cpu"][0], out["numpy"][0]
    assert out["cpu"][1][0].dtype == np.float32
    # float32: the floor and the nudge scale with single precision's eps
    assert loss_rel_err(loss_c, loss_r, loss_r[0], floor=1e-4) < 1e-4 + 100 * out["sensitivity"]


@pytest.mark.parametrize("dims, n", [
    ([1, 1], 1),                  # scalar regression: converges to the rounding floor
    ([1, 3], 1),
    ([40, 33, 33, 33, 12], 16),   # parallel row tiles with a remainder row, dy < n
    ([37, 9, 9, 21], 5),          # dy > n: the rank-n factorization
    ([1024, 64, 64, 10], 16),     # the paper's data shape
    # rows swept tile by tile with the next tile prefetched (a thread's range
    # of a layer >= WHOLE_MAX_WEIGHTS), going down blocks of 12-15 rows
    # (DOWN_BYTES) and a d_in (150) with columns after the last whole strip,
    # ranges of 74-76 rows ending in a part tile and a part block
    ([1024, 160, 136, 150, 10], 16),
])
def test_edge_and_parallel_shapes_match_reference(dims, n):
    out = run_both(dims, n, "orthogonal", 3, 0.8, steps=30, dtype=np.float64, force_parallel=True)
    loss_c, loss_r = out["cpu"][0], out["numpy"][0]
    assert loss_rel_err(loss_c, loss_r, loss_r[0]) < 1e-10
    for a, b in zip(out["cpu"][1], out["numpy"][1]):
        assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_line_aligned_starts_a_cache_line(dtype):
    for shape in [(7,), (3, 5), (2, 3, 40)]:
        for zero in (True, False):
            a = layout.line_aligned(shape, dtype, zero=zero)
            assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
            assert a.ctypes.data % tuning.LINE_BYTES == 0
            if zero:
                assert not a.any()


def test_state_buffers_start_on_cache_lines():
    V, X, Y = random_problem(np.random.default_rng(0), [1024, 256, 256, 10], 16)
    state = cpu.init_state(V, X, Y, np.full(3, 1e-3))
    for name in ("V", "A2", "B2"):
        assert getattr(state, name).ctypes.data % tuning.LINE_BYTES == 0, name
    for name in ("Mf", "S_T", "M_T", "Cf", "parts", "blks"):
        assert getattr(state.scratch, name).ctypes.data % tuning.LINE_BYTES == 0, name
    # every layer's rows then start on a line (rows of m = 256: 2 KiB, padded by one line)
    for k in range(1, 3):
        assert state.stored(k).ctypes.data % tuning.LINE_BYTES == 0
        assert state.stored(k).strides[0] % tuning.LINE_BYTES == 0
    np.testing.assert_array_equal(state.layer(1), V[1])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_padded_rows_are_neither_read_nor_written(dtype, tol):
    """Rows a multiple of PAD_ROW_BYTES long are stored one cache line longer; no kernel touches that line.

    The padding is set to random numbers: a kernel reading it would spoil
    the losses, one writing it (even adding to it) would change them. Both
    passes, both thread choices, padded layers split by columns between
    unpadded ones split by rows (rows of 2 PAD_ROW_BYTES) and by columns.
    """
    item = np.dtype(dtype).itemsize
    m = tuning.PAD_ROW_BYTES // item  # 256 float64, 512 float32
    dims, n = [40, m, m, 2 * m, 100, m, 12], 16
    line = 64 // item
    assert [layout.row_stride(d, item) for d in dims[:-1]] == [40, m + line, m + line, 2 * m, 100, m + line]
    rng = np.random.default_rng()
    Ws, X, Y = random_problem(rng, dims, n, "orthogonal", dtype=dtype)
    V = to_normalized(Ws, dims, dtype)
    eta = layer_rates(0.5 * fastlin.theorem_lr(X.astype(np.float64), len(dims) - 1, dims[-1]), dims)
    state = cpu.State([v.copy() for v in V], X, Y, eta, ranges=2)
    pads = []
    for k in range(len(dims) - 1):
        stored = state.V[state.voff[k]:state.voff[k + 1]].reshape(dims[k + 1], -1)
        assert np.array_equal(state.layer(k), V[k]) and not stored[:, dims[k]:].any()
        stored[:, dims[k]:] = rng.standard_normal(stored[:, dims[k]:].shape)
        pads.append((stored[:, dims[k]:], stored[:, dims[k]:].copy()))
    ref = reference.init_state([v.copy() for v in V], X, Y, eta)
    loss, want = np.empty(12), np.empty(12)
    for i, mode in enumerate(["all", "one", "all"]):  # 4 steps each: both passes twice
        state.mode = mode
        cpu.run_steps(state, loss[4 * i:4 * i + 4], -np.inf)
        reference.run_steps(ref, want[4 * i:4 * i + 4], -np.inf)
    assert loss_rel_err(loss, want, state.loss0) < tol
    assert all(np.array_equal(pad, before) for pad, before in pads)
    for a, b in zip(cpu.weights(state), reference.weights(ref)):
        assert a.shape == b.shape and np.max(np.abs(a - b)) <= tol * np.max(np.abs(b))


def paper_net(L=6, m=20, init="orthogonal", seed=0):
    X, Y = fastlin.paper_data(rng=0, dx=48, n=8, dy=5)
    Ws = fastlin.init_weights(fastlin.network_dims(L, m, 48, 5), init, rng=seed)
    return Ws, X, Y, fastlin.theorem_lr(X, L, 5)


def test_chunked_calls_equal_one_call():
    Ws, X, Y, lr = paper_net()
    dims = [X.shape[0]] + [W.shape[0] for W in Ws]
    V = to_normalized(Ws, dims, np.float64)
    eta = layer_rates(lr, dims)
    one = cpu.init_state([v.copy() for v in V], X, Y, eta)
    loss_one = np.empty(40)
    cpu.run_steps(one, loss_one, -np.inf)
    many = cpu.init_state([v.copy() for v in V], X, Y, eta)
    loss_many = np.empty(40)
    for a, b in [(0, 1), (1, 4), (4, 9), (9, 22), (22, 40)]:  # odd and even chunk lengths
        cpu.run_steps(many, loss_many[a:b], -np.inf)
    assert np.array_equal(loss_one, loss_many)


def test_read_only_data_train_with_the_kernels_compiled_for_writable_data():
    """Sweeps hand the kernels read-only X, Y: that must not be a second compile of every kernel."""
    rng = np.random.default_rng()
    X, Y = rng.standard_normal((12, 4)), rng.standard_normal((3, 4))
    W = fastlin.init_weights([12, 9, 9, 3], "orthogonal", rng=int(rng.integers(1 << 30)))
    writable = fastlin.train(W, X, Y, lr=1e-3, steps=6, backend="cpu")
    compiled = set(passes.run_chunk.signatures)
    X.setflags(write=False)
    Y.setflags(write=False)
    read_only = fastlin.train(W, X, Y, lr=1e-3, steps=6, backend="cpu")
    assert set(passes.run_chunk.signatures) == compiled
    np.testing.assert_array_equal(read_only.loss, writable.loss)


def test_cpu_status_and_stop_match_reference():
    Ws, X, Y, lr = paper_net()
    a = fastlin.train(Ws, X, Y, lr=lr, steps=3000, rtol_stop=1e-6, backend="cpu")
    b = fastlin.train(Ws, X, Y, lr=lr, steps=3000, rtol_stop=1e-6, backend="numpy")
    assert a.status == b.status == "converged" and a.steps_run == b.steps_run
    a = fastlin.train(Ws, X, Y, lr=300 * lr, steps=500, backend="cpu")
    b = fastlin.train(Ws, X, Y, lr=300 * lr, steps=500, backend="numpy")
    assert a.status == b.status == "diverged" and a.steps_run == b.steps_run
    assert np.all(np.isnan(a.loss[a.steps_run + 1:]))


@pytest.mark.parametrize("t", [0, 1, 2, 7])
def test_cpu_chains_at_recorded_steps(t):
    """The cached chains (either pass direction) equal freshly computed ones."""
    Ws, X, Y, lr = paper_net()
    a = fastlin.train(Ws, X, Y, lr=lr, steps=8, record=[t], backend="cpu")
    b = fastlin.train(Ws, X, Y, lr=lr, steps=8, record=[t], backend="numpy")
    for xa, xb in zip(a.chains[t].A + a.chains[t].B + [a.chains[t].E],
                      b.chains[t].A + b.chains[t].B + [b.chains[t].E]):
        np.testing.assert_allclose(xa, xb, rtol=1e-10, atol=1e-12 * np.max(np.abs(xb)))


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("dims, n", [([40, 256, 256, 512, 12], 16), ([23, 37, 5, 41, 7], 9), ([20, 16], 6)])
def test_cpu_chains_at_both_pass_directions_on_fresh_nets(rng, dims, n, dtype, tol):
    """chains() after an upward pass (suffix side recomputed) and a downward one (prefix side recomputed), compiled."""
    Ws, X, Y = random_problem(rng, dims, n)
    Ws, X, Y = [W.astype(dtype) for W in Ws], X.astype(dtype), Y.astype(dtype)
    lr = 0.3 * fastlin.theorem_lr(X.astype(np.float64), len(dims) - 1, dims[-1])
    for t in (1, 2):  # one step ends upward, the next downward
        a = fastlin.train(Ws, X, Y, lr=lr, steps=t, record=[t], backend="cpu")
        V = to_normalized(a.weights, a.dims, np.float64)
        A, B = reference.prefix_chain(V, X.astype(np.float64)), reference.suffix_chain(V)
        for got, want in zip(a.chains[t].A + a.chains[t].B, A + B):
            assert got.dtype == dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.max(np.abs(want)))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least two threads")
@pytest.mark.parametrize("steps", [0, 1])
def test_recomputed_chains_are_the_same_bits_on_one_thread_and_all(rng, steps):
    """After 0 steps the prefix side is recomputed, after 1 the suffix side."""
    dims, n = [40, 256, 256, 512, 12], 16
    Ws, X, Y = random_problem(rng, dims, n)
    V = to_normalized(Ws, dims, np.float64)
    got = []
    for mode in ("one", "all"):
        state = cpu.init_state(V, X, Y, layer_rates(1e-3, dims))
        state.mode = "all"
        cpu.run_steps(state, np.empty(steps), -np.inf)
        assert state.ranges > 1 and state.phase == steps  # a split net
        state.mode = mode
        got.append(cpu.chains(state))
    for a, b in zip(got[0][0] + got[0][1], got[1][0] + got[1][1]):
        np.testing.assert_array_equal(a, b)


def _step0_levels(state):
    """What the upward pass of step 0 reads: E(0), Z(0)^T (A2 level 1, new half), B_1..B_L (B2, new halves)."""
    n, dy = state.X.shape[1], state.E.shape[0]
    L = len(state.dims) - 1
    return [state.E.copy(), state._A_level(1)[n:].copy()] + [state._B_level(j)[dy:].copy() for j in range(1, L + 1)]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("dims, n", [([40, 256, 256, 512, 12], 16), ([23, 37, 5, 41, 7], 9), ([20, 16], 6),
                                     ([9, 300, 3], 1), ([64, 1100, 1100, 10], 5)])
def test_step0_chains_match_numpy_on_any_thread_count(rng, dims, n, dtype, tol):
    """The compiled chains of step 0 (``passes.start_chains``) against NumPy's (``host.start_chains``), and the
    same bits on one thread as on two row ranges."""
    Ws, X, Y = random_problem(rng, dims, n)
    V, X, Y = to_normalized(Ws, dims, dtype), X.astype(dtype), Y.astype(dtype)
    eta = layer_rates(1e-3, dims)
    threads = numba.get_num_threads()
    got = []
    try:
        for T in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(T)
            got.append(_step0_levels(cpu.State(V, X, Y, eta, ranges=2)))
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(got[0], got[-1]):
        np.testing.assert_array_equal(a, b)
    state = cpu.State(V, X, Y, eta)
    state.E[:] = host.start_chains(state._A_level, state._B_level, [v.astype(np.float64) for v in V],
                                   X.astype(np.float64), Y.astype(np.float64))
    for a, want in zip(got[0], _step0_levels(state)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, want, rtol=tol, atol=tol * np.max(np.abs(want)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dims, n", [
    ([40, 33, 33, 33, 12], 16),   # d_y < n, ranges of 16 and 17 rows
    ([37, 40, 40, 21], 5),        # d_y > n: the rank-n factors per range (16 and 24 rows)
    ([37, 9, 9, 21], 5),          # ... and a thread with no rows (9 < RANGE_UNIT)
    ([20, 16], 6),                # L = 1: the first layer only
    ([1024, 64, 64, 10], 16),     # the paper's data shape
    ([40, 300, 100, 300, 12], 16),  # float64: rows of 300 split by rows, of 100 by columns, in turn
    ([40, 256, 256, 512, 12], 16),  # float64: padded rows (row_stride) split by columns, then rows split by rows
])
def test_one_thread_and_all_threads_give_identical_results(dims, n, dtype):
    """Both choices sweep the same row ranges in the same order: bit-for-bit the same run.

    Also with the choice switching between chunks, as the timed choice does.
    """
    rng = np.random.default_rng(7)
    Ws, X, Y = random_problem(rng, dims, n, "orthogonal", dtype=dtype)
    V = to_normalized(Ws, dims, dtype)
    eta = layer_rates(0.5 * fastlin.theorem_lr(X, len(dims) - 1, dims[-1]), dims)
    runs = {}
    for modes in [("one",), ("all",), ("one", "all", "all", "one", "all")]:
        state = cpu.State([v.copy() for v in V], X, Y, eta, ranges=2)
        loss = np.empty(40)
        for i, (a, b) in enumerate([(0, 7), (7, 8), (8, 21), (21, 30), (30, 40)]):
            state.mode = modes[i % len(modes)]
            cpu.run_steps(state, loss[a:b], -np.inf)
        runs[modes] = (loss, cpu.weights(state))
    (loss1, W1), *others = runs.values()
    assert np.all(np.isfinite(loss1))
    for loss, W in others:
        assert np.array_equal(loss, loss1)
        assert all(np.array_equal(a, b) for a, b in zip(W, W1))


@settings(max_examples=25, **SETTINGS)
@given(problems(), st.lists(st.sampled_from(["one", "all"]), min_size=1, max_size=6), st.integers(2, 3),
       st.sampled_from([np.float64, np.float32]))
def test_one_and_several_threads_are_bit_identical_on_drawn_nets(problem, modes, ranges, dtype):
    """One kernel thread or ``ranges`` of them, changing between chunks: the same bits (ranges may exceed the cores)."""
    dims, n, init, seed, scale, _ = problem
    rng = np.random.default_rng(seed)
    Ws, X, Y = random_problem(rng, dims, n, init, dtype=dtype)
    V = to_normalized(Ws, dims, dtype)
    eta = layer_rates(scale * fastlin.theorem_lr(X.astype(np.float64), len(dims) - 1, dims[-1]), dims)
    chunks = [(0, 3), (3, 4), (4, 11), (11, 16), (16, 24)]
    runs = []
    with mock.patch.object(numba.config, "NUMBA_NUM_THREADS", max(ranges, numba.config.NUMBA_NUM_THREADS)), \
            mock.patch.object(numba, "get_num_threads", lambda: ranges):
        for schedule in (["one"], modes):
            state = cpu.State([v.copy() for v in V], X, Y, eta, ranges=ranges)
            assert state.ranges == ranges
            loss = np.full(24, np.nan)
            for i, (a, b) in enumerate(chunks):
                state.mode = schedule[i % len(schedule)]
                done, _ = cpu.run_steps(state, loss[a:b], -np.inf)
                if done < b - a:
                    break
            runs.append((loss, [w.copy() for w in cpu.weights(state)]))
    (loss_one, W_one), (loss_mixed, W_mixed) = runs
    assert np.array_equal(loss_one, loss_mixed, equal_nan=True)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(W_one, W_mixed))


def test_threads_each_on_all_threads_train_concurrently():
    """Two trainings in two Python threads, each on all kernel threads (more threads than cores)."""
    nets = [paper_net(L=4, m=48, init=init, seed=s) for init, s in [("gaussian", 1), ("orthogonal", 2)]]
    dims = [[X.shape[0]] + [W.shape[0] for W in Ws] for Ws, X, Y, lr in nets]

    def run(i):
        Ws, X, Y, lr = nets[i]
        state = cpu.State(to_normalized(Ws, dims[i], np.float64), X, Y, layer_rates(lr, dims[i]), ranges=2)
        state.mode = "all"
        loss = np.empty(100)
        cpu.run_steps(state, loss, -np.inf)
        return loss

    sequential = [run(0), run(1)]
    for got, want in zip(run_in_threads(run, 2), sequential):
        assert np.array_equal(got, want)


def test_threads_train_concurrently_with_same_results():
    """Kernels release the GIL: two configurations in two threads give the sequential results."""
    problems_ = [paper_net(L=8, m=24, init=init, seed=s) for init, s in [("gaussian", 1), ("orthogonal", 2)]]

    def work(i):
        W, X, Y, lr = problems_[i]
        return fastlin.train(W, X, Y, lr=lr, steps=200, backend="cpu").loss

    sequential = [work(0), work(1)]
    for got, want in zip(run_in_threads(work, 2), sequential):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("dx, L, m, dtype, tol", [(48, 3, 20, np.float64, 1e-12), (1024, 4, 64, np.float64, 1e-12),
                                                   (5, 2, 8, np.float64, 1e-12), (1024, 4, 64, np.float32, 1e-4)])
def test_first_layer_through_z_stays_exact_to_convergence(dx, L, m, dtype, tol):
    """The kernel never sweeps V_1: it steps Z = V_1 X and forms V_1 = V_1(0) - S X^T at the end.

    Over a whole run to the rounding floor (3000 steps, loss 1e-27 of loss(0)
    in float64), neither Z's drift nor the sum S may move the weights or the
    loss history away from the textbook step, which updates V_1 itself; also
    for d_x < n (5 < 16), where X^T X is singular.
    """
    rng = np.random.default_rng()
    X, Y = fastlin.paper_data(rng=rng, dx=dx, n=16, dy=10, dtype=dtype)
    Ws = fastlin.init_weights(fastlin.network_dims(L, m, dx, 10), "orthogonal", rng=rng, dtype=dtype)
    lr = 0.5 * fastlin.theorem_lr(X.astype(np.float64), L, 10)
    a = fastlin.train(Ws, X, Y, lr=lr, steps=3000, backend="cpu", dtype=dtype)
    b = fastlin.train(Ws, X, Y, lr=lr, steps=3000, backend="numpy", dtype=dtype)
    assert b.loss[-1] < 1e-5 * b.loss[0]  # the run does reach the floor (float32's is ~1e-14)
    assert np.max(np.abs(a.loss - b.loss)) < tol * b.loss[0]
    for wa, wb in zip(a.weights, b.weights):
        assert np.max(np.abs(wa - wb)) < 10 * tol * np.max(np.abs(wb))


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_add_product_matches_numpy_for_every_rank(dtype, tol):
    """The rank-K update on a block, K = 1..16 (passes of five terms, then one), odd row counts, widths off the strip."""
    rng = np.random.default_rng()
    for K in [K for K in range(1, 17) for _ in range(3)]:
        rows, cols = int(rng.integers(1, 12)), int(rng.integers(1, 70))
        r0, r1 = sorted(int(x) for x in rng.integers(0, rows + 1, 2))
        c0, c1 = sorted(int(x) for x in rng.integers(0, cols + 1, 2))
        out = rng.standard_normal((rows, cols)).astype(dtype)
        C = rng.standard_normal((K, rows)).astype(dtype)
        M = rng.standard_normal((K, cols)).astype(dtype)
        alpha = float(rng.uniform(-2, 2))
        want = out.astype(np.float64)
        want[r0:r1, c0:c1] += alpha * C[:, r0:r1].astype(np.float64).T @ M[:, c0:c1].astype(np.float64)
        tiles.add_product(out, C, M, K, alpha, r0, r1, c0, c1)
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * K, err_msg=f"K = {K}")


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_chain_cols_matches_numpy_for_every_chain_count(dtype, tol):
    """The downward chains' terms, P = 1..13 (groups of 5 and single chains), widths off the strip width."""
    rng = np.random.default_rng()
    for P in range(1, 14):
        rows, cols = int(rng.integers(1, 30)), int(rng.integers(1, 60))
        r0, r1 = sorted(int(x) for x in rng.integers(0, rows + 1, 2))
        Vk = rng.standard_normal((rows, cols)).astype(dtype)
        B_in = rng.standard_normal((P, rows)).astype(dtype)
        acc = rng.standard_normal((P, cols)).astype(dtype)
        terms = B_in[:, r0:r1].astype(np.float64) @ Vk[r0:r1].astype(np.float64)
        for first in (True, False):
            want = terms if first else acc.astype(np.float64) + terms
            got = acc.copy()
            strips.down_chain(Vk, B_in, got, r0, r1, first, 0, cols)
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(r1 - r0, 1),
                                       err_msg=f"P = {P}, first = {first}")


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_chain_blocks_forms_the_whole_product_over_several_blocks(dtype, tol):
    """acc = B_in Vk over all rows, block after block (a downward layer's M = E A^T), in an acc wider than Vk."""
    rng = np.random.default_rng()
    for P in (1, 5, 10, 13):
        cols = int(rng.choice([7, 64, 300, 1030]))
        rows = int(rng.integers(1, 3 * layout.down_block_rows(cols, np.dtype(dtype).itemsize) + 2))
        Vk = rng.standard_normal((rows, cols)).astype(dtype)
        B_in = rng.standard_normal((P, rows)).astype(dtype)
        acc = rng.standard_normal((P, cols + 9)).astype(dtype)
        want = acc.astype(np.float64)
        want[:, :cols] = B_in.astype(np.float64) @ Vk.astype(np.float64)
        strips.down_chain_blocks(Vk, B_in, acc, 0, cols)
        np.testing.assert_allclose(acc, want, rtol=tol, atol=tol * rows, err_msg=f"P = {P}, {rows} x {cols}")
        # A range of columns from a multiple of RANGE_UNIT: those columns only, with the same bits.
        c0 = int(rng.integers(0, cols // tuning.RANGE_UNIT + 1)) * tuning.RANGE_UNIT
        c1 = int(rng.integers(c0, cols + 1))
        part = np.zeros_like(acc)
        strips.down_chain_blocks(Vk, B_in, part, c0, c1)
        assert np.array_equal(part[:, c0:c1], acc[:, c0:c1]) and not part[:, :c0].any() and not part[:, c1:].any()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_down_cols_sweeps_its_columns_through_old_and_new_weights(dtype, tol):
    """A downward layer split by columns: old chain, rank-K update, new chain, on columns [c0, c1) only.

    Rows beyond one block of STRIP_ROWS, column ranges off the strip width,
    d_y from 1 to 7 (groups of five chains and single ones), K from 1 to 12.
    """
    rng = np.random.default_rng()
    for dy, K in [(1, 1), (2, 12), (5, 5), (7, 10), (6, 3)]:
        rows = int(rng.choice([3, 40, tuning.STRIP_ROWS + 37]))
        cols = int(rng.integers(1, 90))
        c0 = int(rng.integers(0, cols // tuning.RANGE_UNIT + 1)) * tuning.RANGE_UNIT
        c1 = int(rng.integers(c0, cols + 1))
        Vk = rng.standard_normal((rows, cols)).astype(dtype)
        B_in = rng.standard_normal((2 * dy, rows)).astype(dtype)
        C = rng.standard_normal((K, rows)).astype(dtype)
        M = rng.standard_normal((K, cols + 5)).astype(dtype)
        out = rng.standard_normal((2 * dy, cols)).astype(dtype)
        alpha = float(rng.uniform(-1, 1))
        V64, B64 = Vk.astype(np.float64), B_in.astype(np.float64)
        want_V = V64.copy()
        want_V[:, c0:c1] += alpha * C.astype(np.float64).T @ M[:, c0:c1].astype(np.float64)
        want_out = out.astype(np.float64)
        want_out[:dy, c0:c1] = B64[:dy] @ V64[:, c0:c1]
        want_out[dy:, c0:c1] = B64[dy:] @ want_V[:, c0:c1]
        strips.down_layer_cols(Vk, B_in, out, C, M, K, alpha, c0, c1)
        scale = max(rows, K)
        np.testing.assert_allclose(Vk, want_V, rtol=tol, atol=tol * scale, err_msg=f"d_y = {dy}, K = {K}")
        np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol * scale * 10, err_msg=f"d_y = {dy}, K = {K}")
