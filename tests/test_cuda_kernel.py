"""The numba.cuda backend against the NumPy reference (issue 5: CUDA backend).

Runs on a real GPU when one is present, else under the numba CUDA simulator
(tiny sizes, ONE block per cooperative grid, except where ``coop_sim`` runs a
cooperative grid of several blocks phase by phase), and is skipped when
numba-cuda is not installed; see ``cuda_setup``. Under the simulator most cases use small
blocks (16 threads, 4-row tiles, 4-column chunks) so that the multi-tile and
remainder paths run in seconds; one case uses the production block shape.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from cuda_setup import MODE, REASON, SIM  # sets up the simulator before numba.cuda loads

import fastlin  # noqa: E402
from fastlin.kernels import reference  # noqa: E402
from fastlin.model import layer_rates, to_normalized  # noqa: E402
from helpers import random_problem  # noqa: E402
from test_cpu_kernel import loss_rel_err  # noqa: E402

in_process = pytest.mark.skipif(MODE not in ("gpu", "sim"), reason=REASON)

SMALL = dict(tpb=16, up_rows=4, down_cols=4)


def cuda_backend():
    from fastlin.kernels import cuda

    return cuda


def run_kernel(kernel, V, X, Y, eta, steps, mode=None, tuning=None):
    state = kernel.init_state([v.copy() for v in V], X, Y, eta, **(tuning or {}))
    if mode is not None:
        state.mode = mode
    loss = np.empty(steps + 1)
    loss[0] = state.loss0
    done, status = kernel.run_steps(state, loss[1:], -np.inf)
    assert done == steps
    return loss, kernel.weights(state), status


def problem(dims, n, dtype, seed=0, init="orthogonal", scale=0.6):
    rng = np.random.default_rng(seed)
    Ws, X, Y = random_problem(rng, dims, n, init, dtype=dtype)
    lr = scale * fastlin.theorem_lr(X.astype(np.float64), len(dims) - 1, dims[-1])
    return to_normalized(Ws, dims, dtype), X, Y, layer_rates(lr, dims)


# (dims, n, mode, tuning): d_y < n and d_y > n (the two factorizations), L = 1,
# scalar, layers wider than one tile with remainders, reduction in groups.
CASES_F64 = [
    ([5, 6, 6, 3], 4, "block", SMALL),
    ([5, 6, 6, 3], 4, "coop", SMALL),
    ([7, 5, 5, 9], 3, "coop", SMALL),
    ([7, 5, 5, 9], 3, "block", SMALL),
    ([4, 3], 2, "coop", SMALL),
    ([1, 1], 1, "block", SMALL),
    ([6, 9, 9, 9, 9, 2], 5, "block", dict(SMALL, reduction_bytes=16 * 8 * 3)),
    ([9, 10, 10, 4], 6, "coop", None),
]


@in_process
@pytest.mark.parametrize("dims, n, mode, tuning", CASES_F64)
def test_cuda_float64_matches_reference(dims, n, mode, tuning):
    V, X, Y, eta = problem(dims, n, np.float64)
    steps = 7  # four upward and three downward passes
    loss_c, W_c, status_c = run_kernel(cuda_backend(), V, X, Y, eta, steps, mode, tuning)
    loss_r, W_r, status_r = run_kernel(reference, V, X, Y, eta, steps)
    assert status_c == status_r
    assert loss_rel_err(loss_c, loss_r, loss_r[0]) < 1e-10
    scale = max(np.max(np.abs(b)) for b in W_r)
    for a, b in zip(W_c, W_r):
        assert a.dtype == np.float64
        assert np.max(np.abs(a - b)) <= 1e-10 * scale


@in_process
@pytest.mark.parametrize("dims, n, mode", [([5, 6, 6, 3], 4, "block"), ([7, 5, 5, 9], 3, "coop")])
def test_cuda_float32_matches_reference(dims, n, mode):
    V, X, Y, eta = problem(dims, n, np.float32)
    loss_c, W_c, _ = run_kernel(cuda_backend(), V, X, Y, eta, 6, mode, SMALL)
    loss_r, _, _ = run_kernel(reference, V, X, Y, eta, 6)
    assert W_c[0].dtype == np.float32
    assert np.max(np.abs(loss_c - loss_r) / np.maximum(np.abs(loss_r), 1e-4 * loss_r[0])) < 1e-4


# (dims, n, blocks): a cooperative grid of several blocks, each with tiles of
# every layer; d_y <= n and d_y > n; L = 1 and a wide first layer with d_1 >
# 16 threads, so that every block owns columns of Z.
MULTI_BLOCK = [
    ([5, 40, 40, 3], 4, 2),
    ([9, 10, 10, 4], 6, 3),
    ([7, 9, 9, 9], 3, 2),
    ([4, 20], 3, 2),
]


@pytest.mark.skipif(not SIM, reason="phased multi-block grids are a simulator harness (coop_sim.py)")
@pytest.mark.parametrize("order", ["forward", "reverse"])
@pytest.mark.parametrize("dims, n, blocks", MULTI_BLOCK)
def test_cuda_multi_block_cooperative_grid_matches_reference(dims, n, blocks, order):
    """The cooperative kernel over several blocks, run phase by phase in both block orders.

    A cross-block read not ordered by a grid sync gives different results in
    the two orders (coop_sim.py), so both must match the reference.
    """
    from coop_sim import multi_block_grids

    cuda = cuda_backend()
    V, X, Y, eta = problem(dims, n, np.float64, seed=3)
    state = cuda.init_state([v.copy() for v in V], X, Y, eta, **SMALL)
    state.mode = "coop"
    state.batch.grid = blocks
    steps = 5
    loss = np.empty(steps + 1)
    loss[0] = state.loss0
    with multi_block_grids(order):
        for a, b in [(1, 4), (4, 6)]:  # two launches: the state carries over between them
            assert cuda.run_steps(state, loss[a:b], -np.inf)[0] == b - a
    loss_r, W_r, _ = run_kernel(reference, V, X, Y, eta, steps)
    assert loss_rel_err(loss, loss_r, loss_r[0]) < 1e-10
    scale = max(np.max(np.abs(w)) for w in W_r)
    for a, b in zip(cuda.weights(state), W_r):
        assert np.max(np.abs(a - b)) <= 1e-10 * scale


@in_process
def test_cuda_chunked_calls_equal_one_call():
    cuda = cuda_backend()
    V, X, Y, eta = problem([5, 6, 6, 3], 4, np.float64)
    one = cuda.init_state([v.copy() for v in V], X, Y, eta, **SMALL)
    loss_one = np.empty(9)
    cuda.run_steps(one, loss_one, -np.inf)
    many = cuda.init_state([v.copy() for v in V], X, Y, eta, **SMALL)
    loss_many = np.empty(9)
    for a, b in [(0, 1), (1, 4), (4, 6), (6, 9)]:  # odd and even chunk lengths
        cuda.run_steps(many, loss_many[a:b], -np.inf)
    assert np.array_equal(loss_one, loss_many)


@pytest.fixture
def small_blocks(monkeypatch):
    """Under the simulator, fastlin.train's kernels use the small test blocks."""
    if SIM:
        from fastlin.kernels import tuning

        for name, value in [("THREADS_PER_BLOCK", 16), ("UP_ROWS", 4), ("DOWN_COLS", 4)]:
            monkeypatch.setattr(tuning, name, value)


def small_net(init="orthogonal", seed=0, L=2, m=4):
    X, Y = fastlin.paper_data(rng=0, dx=6, n=5, dy=3)
    Ws = fastlin.init_weights(fastlin.network_dims(L, m, 6, 3), init, rng=seed)
    return Ws, X, Y, fastlin.theorem_lr(X, L, 3)


@in_process
def test_cuda_status_and_stop_match_reference(small_blocks):
    Ws, X, Y, lr = small_net(L=1)
    a = fastlin.train(Ws, X, Y, lr=4 * lr, steps=30, rtol_stop=0.3, backend="cuda")
    b = fastlin.train(Ws, X, Y, lr=4 * lr, steps=30, rtol_stop=0.3, backend="numpy")
    assert a.status == b.status == "converged" and a.steps_run == b.steps_run
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-10)
    a = fastlin.train(Ws, X, Y, lr=1e8 * lr, steps=30, backend="cuda")
    b = fastlin.train(Ws, X, Y, lr=1e8 * lr, steps=30, backend="numpy")
    assert a.status == b.status == "diverged" and a.steps_run == b.steps_run
    assert np.all(np.isnan(a.loss[a.steps_run + 1:]))


@in_process
def test_cuda_chains_at_recorded_steps(small_blocks):
    """The cached chains (both pass directions) equal freshly computed ones."""
    Ws, X, Y, lr = small_net()
    record = [0, 1, 2, 3]
    a = fastlin.train(Ws, X, Y, lr=lr, steps=3, record=record, backend="cuda")
    b = fastlin.train(Ws, X, Y, lr=lr, steps=3, record=record, backend="numpy")
    for t in record:
        for xa, xb in zip(a.chains[t].A + a.chains[t].B + [a.chains[t].E],
                          b.chains[t].A + b.chains[t].B + [b.chains[t].E]):
            np.testing.assert_allclose(xa, xb, rtol=1e-10, atol=1e-12 * np.max(np.abs(xb)))


@in_process
def test_train_batch_matches_per_config_reference(small_blocks):
    """Different depths, widths, inits and rates in one launch; per-config stop and divergence."""
    X, Y = fastlin.paper_data(rng=1, dx=6, n=5, dy=3)
    configs = [(1, 4, "gaussian", 1.0, None), (3, 5, "orthogonal", 0.5, None),
               (2, 7, "orthogonal", 1e4, None), (1, 3, "orthogonal", 4.0, 0.7)]
    weights, lrs, stops = [], [], []
    for k, (L, m, init, scale, stop) in enumerate(configs):
        weights.append(fastlin.init_weights(fastlin.network_dims(L, m, 6, 3), init, rng=k))
        lrs.append(scale * fastlin.theorem_lr(X, L, 3))
        stops.append(stop)
    got = fastlin.train_batch(weights, X, Y, lr=lrs, steps=12, rtol_stop=stops, backend="cuda")
    statuses = []
    for W, lr, stop, res in zip(weights, lrs, stops, got):
        want = fastlin.train(W, X, Y, lr=lr, steps=12, rtol_stop=stop, backend="numpy")
        assert res.status == want.status and res.steps_run == want.steps_run
        finite = np.isfinite(want.loss)
        assert np.array_equal(finite, np.isfinite(res.loss))
        if want.status != "diverged":
            np.testing.assert_allclose(res.loss, want.loss, rtol=1e-10)
            for a, b in zip(res.weights, want.weights):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.max(np.abs(b)))
        statuses.append(res.status)
    assert statuses == ["completed", "completed", "diverged", "converged"]


@in_process
def test_batch_weights_copy_the_device_buffers_once_per_run():
    """Weights of every configuration from one host copy (not one copy per configuration), fresh after a run."""
    cuda = cuda_backend()
    X, Y = fastlin.paper_data(rng=1, dx=6, n=5, dy=3)
    Vs, etas = [], []
    for k in range(3):
        V, _, _, eta = problem([6, 4 + k, 4 + k, 3], 5, np.float64, seed=k)
        Vs.append(V)
        etas.append(eta)
    batch = cuda.init_batch([[v.copy() for v in V] for V in Vs], X, Y, etas, **SMALL)

    class Counting:
        def __init__(self, array):
            self.array, self.copies = array, 0

        def copy_to_host(self):
            self.copies += 1
            return self.array.copy_to_host()

    batch.d_V = Counting(batch.d_V)
    first = [cuda.batch_weights(batch, c) for c in range(3)]
    assert batch.d_V.copies == 1
    batch.d_V = batch.d_V.array
    cuda.run_batch(batch, np.full(3, 2), np.full(3, -np.inf), np.empty((3, 2)))
    after = [cuda.batch_weights(batch, c) for c in range(3)]
    for c in range(3):
        assert [w.shape for w in first[c]] == [v.shape for v in Vs[c]]
        np.testing.assert_array_equal(first[c][1], Vs[c][1])
        assert not np.array_equal(after[c][1], first[c][1])  # two steps later, not the cached copy
        _, W_r, _ = run_kernel(reference, Vs[c], X, Y, etas[c], 2)
        for a, b in zip(after[c], W_r):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.max(np.abs(b)))


def test_train_batch_other_backends_loop_over_train():
    Ws, X, Y, lr = small_net()
    res = fastlin.train_batch([Ws, Ws], X, Y, lr=[lr, 2 * lr], steps=3, backend="numpy")
    assert np.array_equal(res[1].loss, fastlin.train(Ws, X, Y, lr=2 * lr, steps=3, backend="numpy").loss)


@pytest.mark.skipif(MODE != "subprocess", reason="the in-process tests ran")
def test_cuda_simulator_in_subprocess():
    """numba.cuda was imported without the simulator here: run this file again in a clean process."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, cwd=os.path.dirname(__file__), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_cuda_backend_error_without_gpu_is_clear():
    if MODE in ("gpu", "sim"):
        pytest.skip("a GPU or the simulator is available")
    with pytest.raises(RuntimeError, match="cuda"):
        fastlin.train(*small_net()[:3], lr=0.1, steps=1, backend="cuda")
