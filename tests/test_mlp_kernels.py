"""The Numba CPU kernel for nonlinear chains against the NumPy reference, on fresh random problems."""

import numba
import numpy as np
import pytest

import fastlin
from fastlin.data import one_hot
from fastlin.kernels.mlp import ACTIVATIONS, LOSSES, Setup, cpu, reference
from fastlin.kernels.mlp.elementwise import tanh, tanh32

STEPS = 30
RTOL = {np.float64: 1e-10, np.float32: 1e-4}


def problem(rng, depth, dtype, loss):
    """Uneven random widths (not multiples of a vector), n samples, data for ``loss``.

    Hidden widths from 8 on: a product of 20 Gaussian layers as narrow as 3
    can blow up the outputs so far that no one rate suits every draw.
    """
    dims = [int(rng.integers(3, 40))] + [int(d) for d in rng.integers(8, 40, depth - 1)] + [int(rng.integers(3, 40))]
    n = int(rng.integers(20, 60))
    init = "orthogonal" if depth > 5 else str(rng.choice(["gaussian", "orthogonal"]))
    W, b = fastlin.init_mlp(dims, init, sigma_b2=0.05, rng=rng, dtype=dtype)
    X = rng.standard_normal((dims[0], n)).astype(dtype)
    if loss == "cross_entropy":
        Y = one_hot(rng.integers(0, dims[-1], n), dims[-1], dtype)
    else:
        Y = rng.standard_normal((dims[-1], n)).astype(dtype)
    return W, b, X, Y


def assert_close(a, b, rtol):
    """Entry-wise, at the scale of the largest entry (entries that cancel to ~0 are not held to rtol)."""
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("depth", [1, 2, 5, 20])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("activation", ["tanh", "linear", "relu"])
@pytest.mark.parametrize("minibatch", [False, True])
def test_cpu_is_the_reference(rng, dtype, depth, loss, activation, minibatch):
    W, b, X, Y = problem(rng, depth, dtype, loss)
    batch = int(rng.integers(1, X.shape[1])) if minibatch else None
    # Rates at which such nets train smoothly: at larger ones deep nets
    # oscillate and any two roundings part past the tolerance within 30 steps
    # (tanh at 0.05 and L = 20: 1e-11 in float64, 8e-3 in float32). These
    # passed 40 draws of every case in both dtypes. A deep linear chain's
    # outputs are scaled to unit size first: unscaled, some draws are 10x
    # larger and diverge at any one rate.
    if activation == "linear":
        _, f = reference.forward(W, b, X, ACTIVATIONS["linear"])
        W[-1] = (W[-1] / np.sqrt(np.mean(f.astype(np.float64) ** 2))).astype(dtype)
    lr = {"linear": 0.05 / depth, "tanh": min(0.05, 0.25 / depth), "relu": min(0.05, 0.1 / depth)}[activation]
    runs = [fastlin.train_mlp(W, b, X, Y, activation=activation, loss=loss, lr=lr, steps=STEPS, batch_size=batch,
                              rng=7, eval_every=10, backend=backend) for backend in ("numpy", "cpu")]
    ref, got = runs
    assert ref.status == got.status == "completed"
    np.testing.assert_allclose(got.loss, ref.loss, rtol=RTOL[dtype])
    for a, c in zip(got.weights + got.biases, ref.weights + ref.biases):
        assert a.dtype == dtype
        assert_close(a, c, RTOL[dtype])
    np.testing.assert_array_equal(got.eval_steps, ref.eval_steps)
    # accuracies are argmaxes: equal unless two outputs tie to within rounding
    assert np.max(np.abs(got.train_accuracy - ref.train_accuracy)) <= 1 / X.shape[1]


def test_net_without_biases_keeps_them_zero(rng):
    W, _, X, Y = problem(rng, 3, np.float64, "mse")
    zero = [np.zeros(w.shape[0]) for w in W]
    without = fastlin.train_mlp(W, None, X, Y, loss="mse", lr=0.1, steps=5, backend="cpu")
    with_zero = fastlin.train_mlp(W, zero, X, Y, loss="mse", lr=0.1, steps=5, backend="cpu")
    assert without.biases is None
    assert not np.allclose(without.loss, with_zero.loss)  # zero biases that train move
    ref = fastlin.train_mlp(W, None, X, Y, loss="mse", lr=0.1, steps=5, backend="numpy")
    np.testing.assert_allclose(without.loss, ref.loss, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least two threads")
def test_results_do_not_depend_on_the_thread_count(rng, dtype):
    """Wide enough for every product to be split among threads; one thread and all give the same bits."""
    dims = [64, 160, 96, 10]
    W, b = fastlin.init_mlp(dims, "orthogonal", rng=rng, dtype=dtype)
    X, Y = rng.standard_normal((64, 150)).astype(dtype), one_hot(rng.integers(0, 10, 150), 10, dtype)
    setup = Setup(ACTIVATIONS["tanh"], LOSSES["cross_entropy"], 0.1, 40, 5, True)
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            state = cpu.init_state(W, b, X, Y, setup)
            loss = np.empty(6)
            cpu.run_steps(state, loss)
            runs.append((loss, cpu.weights(state), state.threads()))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert runs[0][2] == 1 and runs[1][2] > 1  # the second run really used several threads
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, c in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, c)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least two threads")
def test_one_thread_and_all_threads_give_the_same_bits(rng):
    """Force both paths of one state (the chooser picks by timing) and compare."""
    dims = [64, 128, 128, 10]
    W, b = fastlin.init_mlp(dims, "gaussian", rng=rng)
    X, Y = rng.standard_normal((64, 100)), one_hot(rng.integers(0, 10, 100), 10)
    setup = Setup(ACTIVATIONS["tanh"], LOSSES["cross_entropy"], 0.1, 32, 1, True)
    states = [cpu.init_state(W, b, X, Y, setup) for _ in range(2)]
    states[0].mode, states[1].mode = "one", "all"
    losses = [np.empty(4), np.empty(4)]
    for state, loss in zip(states, losses):
        cpu.run_steps(state, loss)
    assert states[0].threads() == 1 and states[1].threads() > 1
    np.testing.assert_array_equal(*losses)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_edge_runs_are_the_reference(rng, dtype):
    """steps = 0, a batch of one sample and a batch of all of them, on both backends."""
    W, b, X, Y = problem(rng, 3, dtype, "cross_entropy")
    n = X.shape[1]
    for steps, batch in ((0, None), (0, n), (5, 1), (5, n)):
        ref, got = (fastlin.train_mlp(W, b, X, Y, lr=0.05, steps=steps, batch_size=batch, rng=3, eval_every=1,
                                      backend=backend) for backend in ("numpy", "cpu"))
        assert got.loss.shape == (steps + 1,) and got.steps_run == ref.steps_run == steps
        np.testing.assert_allclose(got.loss, ref.loss, rtol=RTOL[dtype])
        for a, c in zip(got.weights + got.biases, ref.weights + ref.biases):
            assert a.dtype == dtype
            assert_close(a, c, RTOL[dtype])
        np.testing.assert_array_equal(got.eval_steps, np.arange(steps + 1))


def test_float32_divergence_is_found_at_the_same_step_on_both_backends(rng):
    """A float32 residual whose square overflows float32 is still a finite float64 loss on both backends."""
    W, b = fastlin.init_mlp([6, 20, 20, 4], "gaussian", rng=rng, dtype=np.float32)
    X = rng.standard_normal((6, 30)).astype(np.float32)
    Y = rng.standard_normal((4, 30)).astype(np.float32)
    runs = [fastlin.train_mlp(W, b, X, Y, activation="linear", loss="mse", lr=1e6, steps=6, backend=backend)
            for backend in ("numpy", "cpu")]
    assert runs[0].status == runs[1].status == "diverged"
    assert runs[0].steps_run == runs[1].steps_run
    finite = np.isfinite(runs[0].loss)
    np.testing.assert_array_equal(finite, np.isfinite(runs[1].loss))
    assert np.max(runs[0].loss[finite]) > np.finfo(np.float32).max ** 0.5  # past float32's squares
    np.testing.assert_allclose(runs[1].loss[finite], runs[0].loss[finite], rtol=1e-4)


def test_tanh_is_numpys_to_a_few_ulp():
    x = np.concatenate([np.linspace(-30, 30, 20001), np.geomspace(1e-300, 20, 2000), -np.geomspace(1e-300, 20, 2000)])
    got = np.array([tanh(v) for v in x])
    want = np.tanh(x)
    nonzero = want != 0
    assert np.max(np.abs(got[nonzero] - want[nonzero]) / np.abs(want[nonzero])) < 4 * np.finfo(float).eps
    assert np.isnan(tanh(np.nan)) and tanh(np.inf) == 1 and tanh(-np.inf) == -1


def test_tanh32_is_numpys_to_a_few_float32_ulp():
    x = np.concatenate([np.linspace(-30, 30, 20001), np.geomspace(1e-37, 20, 2000),
                        -np.geomspace(1e-37, 20, 2000)]).astype(np.float32)
    got = np.array([tanh32(v) for v in x], dtype=np.float32)
    want = np.tanh(x)
    nonzero = want != 0
    assert np.max(np.abs(got[nonzero] - want[nonzero]) / np.abs(want[nonzero])) < 4 * np.finfo(np.float32).eps
    assert np.isnan(tanh32(np.float32(np.nan))) and tanh32(np.float32(np.inf)) == 1


def test_cpu_accuracy_is_the_reference(rng):
    W, b, X, Y = problem(rng, 4, np.float64, "cross_entropy")
    setup = Setup(ACTIVATIONS["tanh"], LOSSES["cross_entropy"], 0.1, 0, 0, True)
    labels = np.argmax(Y, 0)
    Xt = rng.standard_normal((X.shape[0], 333))
    lt = rng.integers(0, Y.shape[0], 333)
    states = [module.init_state(W, b, X, Y, setup) for module in (reference, cpu)]
    for Xe, le in ((X, labels), (Xt, lt)):
        assert reference.accuracy(states[0], Xe, le) == cpu.accuracy(states[1], Xe, le)
