"""The NumPy reference trainer and the driver (issue: foundation)."""

import gc
import weakref

import numba
import numpy as np
import pytest

import fastlin
from fastlin.kernels import load_backend, reference
from fastlin.model import each_layer, to_normalized, to_raw
from helpers import direct_gd, direct_grads, direct_loss, random_problem, rel_err

# (dims, n): L = 1, 2 and deeper; m < n; m = dy; dx != m; dx < m.
SHAPES = [
    ([7, 3], 5),
    ([6, 9, 4], 5),
    ([12, 4, 4, 4, 3], 9),     # m < n
    ([5, 3, 3, 3], 4),         # m = dy
    ([10, 6, 6, 6, 6, 2], 3),  # dx != m
    ([3, 8, 8, 8, 4], 6),      # dx < m
]


@pytest.mark.parametrize("dims, n", SHAPES)
def test_loss_matches_direct_formula_with_alpha(dims, n, rng):
    Ws, X, Y = random_problem(rng, dims, n)
    result = fastlin.train(Ws, X, Y, lr=1e-3, steps=0)
    assert result.loss.shape == (1,)
    assert result.loss[0] == pytest.approx(direct_loss(Ws, X, Y), rel=1e-12)


@pytest.mark.parametrize("dims, n", SHAPES)
def test_gradients_match_finite_differences(dims, n, rng):
    Ws, X, Y = random_problem(rng, dims, n)
    V = to_normalized(Ws, dims, np.float64)
    _, grads = reference.gradients(V, X, Y)
    h = 1e-6
    for i, (Vi, Gi) in enumerate(zip(V, grads)):
        for _ in range(4):
            r, c = rng.integers(Vi.shape[0]), rng.integers(Vi.shape[1])
            up = [v.copy() for v in V]
            down = [v.copy() for v in V]
            up[i][r, c] += h
            down[i][r, c] -= h
            fd = (reference.gradients(up, X, Y)[0] - reference.gradients(down, X, Y)[0]) / (2 * h)
            assert fd == pytest.approx(Gi[r, c], rel=1e-5, abs=1e-7 * np.max(np.abs(Gi)))
    # the independent raw-parametrization gradient passes the same check
    Graw = direct_grads(Ws, X, Y)
    i = len(Ws) - 1
    r, c = 0, Ws[i].shape[1] - 1
    up = [W.copy() for W in Ws]
    down = [W.copy() for W in Ws]
    up[i][r, c] += h
    down[i][r, c] -= h
    fd = (direct_loss(up, X, Y) - direct_loss(down, X, Y)) / (2 * h)
    assert fd == pytest.approx(Graw[i][r, c], rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("dims, n", SHAPES)
def test_trainer_matches_direct_gd(dims, n, init, backend, rng):
    Ws, X, Y = random_problem(rng, dims, n, init)
    lr = 0.5 * fastlin.theorem_lr(X, len(dims) - 1, dims[-1])
    expected_loss, expected_W = direct_gd(Ws, X, Y, lr, steps=6)
    result = fastlin.train(Ws, X, Y, lr=lr, steps=6, backend=backend)
    assert result.status == "completed" and result.steps_run == 6
    assert rel_err(result.loss, expected_loss) < 1e-10
    for W, W_ref in zip(result.weights, expected_W):
        assert rel_err(W, W_ref) < 1e-10


def test_inputs_unchanged(rng):
    Ws, X, Y = random_problem(rng, [6, 5, 5, 3], 4)
    copies = [a.copy() for a in Ws + [X, Y]]
    result = fastlin.train(Ws, X, Y, lr=1e-2, steps=5)
    assert all(np.array_equal(a, b) for a, b in zip(Ws + [X, Y], copies))
    assert not np.array_equal(result.weights[0], Ws[0])


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_state_freed_on_return(backend, rng, monkeypatch):
    """The state dies with the call and its buffers with the result (the weights may be the state's own, scaled
    in place), without a garbage collection: a reference cycle kept the cpu backend's weight buffer, the size of
    all weights, alive until one."""
    kernel = load_backend(backend)
    refs = []

    def init_state(V, X, Y, eta):
        state = real_init_state(V, X, Y, eta)
        refs.extend(weakref.ref(a) for a in [state, *V, getattr(V, "flat", V[0])])
        return state

    real_init_state = kernel.init_state
    Ws, X, Y = random_problem(rng, [6, 5, 5, 3], 4)
    # Compiled first: Numba's compiler leaves cycles (frames of its exceptions) that hold the arguments.
    fastlin.train(Ws, X, Y, lr=1e-2, steps=3, backend=backend, record=[0, 3], ntk=[1])
    monkeypatch.setattr(kernel, "init_state", init_state)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = fastlin.train(Ws, X, Y, lr=1e-2, steps=3, backend=backend, record=[0, 3], ntk=[1])
        assert result.status == "completed" and refs
        assert refs[0]() is None, "the state outlived the call"
        del result
        alive = [type(r()).__name__ for r in refs if r() is not None]
        assert not alive, f"still alive after the call: {alive}"
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_divergence_is_a_status(backend, rng):
    Ws, X, Y = random_problem(rng, [6, 5, 5, 3], 4)
    result = fastlin.train(Ws, X, Y, lr=1e4, steps=200, backend=backend)
    assert result.status == "diverged"
    t = result.steps_run
    assert 0 < t < 200
    assert np.all(np.isfinite(result.loss[:t]))
    assert not np.isfinite(result.loss[t])
    assert np.all(np.isnan(result.loss[t + 1:]))


def test_rtol_stop_converges_and_holds_last_value(rng):
    X, Y = fastlin.paper_data(rng=1, dx=32, n=4, dy=3)
    Ws = fastlin.init_weights(fastlin.network_dims(3, 16, 32, 3), "orthogonal", rng=2)
    lr = fastlin.theorem_lr(X, 3, 3)
    result = fastlin.train(Ws, X, Y, lr=lr, steps=5000, rtol_stop=1e-3)
    assert result.status == "converged"
    t = result.steps_run
    assert t < 5000
    assert result.relative_loss[t] <= 1e-3 < result.relative_loss[t - 1]
    assert np.all(result.loss[t:] == result.loss[t])


def test_float32_stays_float32(rng):
    Ws, X, Y = random_problem(rng, [6, 5, 5, 3], 4, dtype=np.float32)
    result = fastlin.train(Ws, X, Y, lr=1e-2, steps=3)
    assert result.weights[0].dtype == np.float32 and result.loss.dtype == np.float64
    ref = fastlin.train([W.astype(np.float64) for W in Ws], X.astype(np.float64),
                        Y.astype(np.float64), lr=1e-2, steps=3)
    assert rel_err(result.loss, ref.loss) < 1e-4


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_deep_net_has_no_underflow(backend):
    """alpha = 30^(-699/2) / sqrt(10) ~ 1e-517 underflows; the normalized form must not."""
    X, Y = fastlin.paper_data(rng=0, dx=64, n=4, dy=10)
    dims = fastlin.network_dims(700, 30, 64, 10)
    Ws = fastlin.init_weights(dims, "orthogonal", rng=0)
    result = fastlin.train(Ws, X, Y, lr=fastlin.theorem_lr(X, 700, 10), steps=3, backend=backend)
    assert result.status == "completed"
    assert np.all(np.isfinite(result.loss)) and result.loss[0] > 0
    # Orthogonal init is a scaled isometry: ||f(X)|| is of the order of ||X|| sqrt(dy/dx)-ish, not 0 or inf.
    f_norm2 = 2 * result.loss[0]  # loss(0) includes ||f - Y||^2
    assert 1e-3 < f_norm2 / np.sum(Y**2) < 1e3
    assert result.loss[3] < result.loss[0]


def test_record_chains(rng):
    Ws, X, Y = random_problem(rng, [6, 5, 5, 3], 4)
    result = fastlin.train(Ws, X, Y, lr=1e-2, steps=4, record=[0, 4, 2])
    assert sorted(result.chains) == [0, 2, 4]
    A, B, E = result.chains[4]
    dims = result.dims
    V = to_normalized(result.weights, dims, np.float64)
    assert rel_err(A[-1], reference.prefix_chain(V, X)[-1]) < 1e-12
    assert rel_err(B[0], reference.suffix_chain(V)[0]) < 1e-12
    np.testing.assert_allclose(0.5 * np.sum(E**2), result.loss[4], rtol=1e-12)
    with pytest.raises(ValueError):
        fastlin.train(Ws, X, Y, lr=1e-2, steps=4, record=[5])


def good_problem():
    rng = np.random.default_rng(0)
    return random_problem(rng, [6, 5, 5, 3], 4)


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda W, X, Y, kw: ([W[0], W[0]] + W[1:], X, Y, kw), ValueError, "shape chain"),
    (lambda W, X, Y, kw: (W, X[:, :3], Y, kw), ValueError, "columns"),
    (lambda W, X, Y, kw: (W, X[:5], Y, kw), ValueError, "rows"),
    (lambda W, X, Y, kw: (W, X, Y[:2], kw), ValueError, "rows"),
    (lambda W, X, Y, kw: (W, np.where(X > 0, np.nan, X), Y, kw), ValueError, "non-finite"),
    (lambda W, X, Y, kw: (W, X, np.full_like(Y, np.inf), kw), ValueError, "non-finite"),
    (lambda W, X, Y, kw: ([W[0] * np.inf] + W[1:], X, Y, kw), ValueError, "non-finite"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "lr": 0.0}), ValueError, "lr"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "lr": -1.0}), ValueError, "lr"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "lr": float("nan")}), ValueError, "lr"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "lr": "big"}), TypeError, "lr"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "steps": -1}), ValueError, "steps"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "steps": 2.5}), TypeError, "steps"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "backend": "tpu"}), ValueError, "unknown backend"),
    (lambda W, X, Y, kw: (W, X, Y, {**kw, "rtol_stop": 2.0}), ValueError, "rtol_stop"),
    (lambda W, X, Y, kw: (W, X.astype(np.float32), Y, kw), TypeError, "mixed dtypes"),
    (lambda W, X, Y, kw: (W, X.astype(np.int64), Y, kw), TypeError, "dtype"),
    (lambda W, X, Y, kw: (W, np.where(X > 0, 1e39, X), Y, {**kw, "dtype": np.float32}), ValueError, "float32's range"),
    (lambda W, X, Y, kw: ([], X, Y, kw), TypeError, "non-empty"),
    (lambda W, X, Y, kw: (W, X.ravel(), Y, kw), TypeError, "2-D"),
])
def test_bad_input_raises(mutate, exc, match):
    W, X, Y = good_problem()
    W, X, Y, kw = mutate(W, X, Y, {"lr": 1e-2, "steps": 3})
    with pytest.raises(exc, match=match):
        fastlin.train(W, X, Y, **kw)


def test_explicit_dtype_converts_mixed_inputs():
    W, X, Y = good_problem()
    result = fastlin.train(W, X.astype(np.float32), Y, lr=1e-2, steps=2, dtype=np.float64)
    assert result.dtype == "float64" and result.status == "completed"


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("width", [16, 13])
def test_auto_lr_trains_the_nets_the_old_default_diverged_on(init, width):
    """Depth 8, widths 16 and 13 on the paper's data: 0.5 x the Theorem 4.1 rate diverged for two of them."""
    X, Y = fastlin.paper_data(rng=0)
    W = fastlin.init_weights(fastlin.network_dims(8, width, 1024, 10), init, rng=0)
    auto = fastlin.train(W, X, Y, lr="auto", steps=1000)
    assert auto.status in ("completed", "converged") and auto.relative_loss[-1] < 1
    lr, lam_max = fastlin.ntk.auto_lr(W, X)
    assert auto.lr == lr == 0.5 / lam_max
    explicit = fastlin.train(W, X, Y, lr=lr, steps=1000)
    np.testing.assert_array_equal(explicit.loss, auto.loss)


def test_the_old_default_diverged_where_auto_trains():
    X, Y = fastlin.paper_data(rng=0)
    W = fastlin.init_weights(fastlin.network_dims(8, 16, 1024, 10), "orthogonal", rng=0)
    assert fastlin.train(W, X, Y, lr=0.5 * fastlin.theorem_lr(X, 8, 10), steps=10).status == "diverged"
    assert fastlin.train(W, X, Y, lr="auto", steps=10).status == "completed"


def test_auto_lr_refuses_what_it_cannot_use():
    X, Y = fastlin.paper_data(rng=0, dx=8, n=4, dy=2)
    W = fastlin.init_weights([8, 6, 2], "gaussian", rng=0)
    with pytest.raises(TypeError, match="'auto'"):
        fastlin.train(W, X, Y, lr="automatic", steps=1)
    with pytest.raises(ValueError, match=r"scale must be a number in \(0, 2\)"):
        fastlin.ntk.auto_lr(W, X, 2.0)
    with pytest.raises(ValueError, match="no learning rate"):
        fastlin.ntk.auto_lr([np.zeros_like(w) for w in W], X)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("steps", [0, 3])
def test_returned_weights_are_separate_c_contiguous_arrays(backend, steps, rng):
    """Raw weights come back C-contiguous (the cpu layout pads rows of width 256), one array per layer: writing
    one changes no other, nor the inputs."""
    Ws, X, Y = random_problem(rng, [12, 256, 256, 40, 3], 6)
    copies = [W.copy() for W in Ws]
    result = fastlin.train(Ws, X, Y, lr=1e-3, steps=steps, backend=backend)
    expected_loss, expected_W = direct_gd(Ws, X, Y, 1e-3, steps=steps)
    for W, W_ref in zip(result.weights, expected_W):
        assert W.flags.c_contiguous and W.flags.writeable
        assert rel_err(W, W_ref) < 1e-10
    before = [W.copy() for W in result.weights]
    for k, W in enumerate(result.weights):
        W[...] = -1.0
        assert all(np.array_equal(a, b) for a, b in zip(result.weights[k + 1:], before[k + 1:]))
    assert all(np.array_equal(a, b) for a, b in zip(Ws, copies))


def test_to_raw_in_place_scales_what_it_may_and_copies_the_rest(rng):
    dims = [5, 4, 3, 2]
    V = [rng.standard_normal((4, 5)), rng.standard_normal((3, 8))[:, :4], rng.standard_normal((2, 3))]
    V[2].flags.writeable = False
    want = [np.sqrt(d) * v for d, v in zip(dims[1:], V)]
    got = to_raw(V, dims, in_place=True)
    assert np.shares_memory(got[0], V[0]) and not np.shares_memory(got[1], V[1]) and got[2] is not V[2]
    for a, b in zip(got, want):
        assert a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
    fresh = to_raw(want, dims)
    assert not any(np.shares_memory(a, b) for a, b in zip(fresh, want))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least two threads")
def test_each_layer_spreads_large_work_over_threads_in_order(monkeypatch):
    """Above HOST_THREADS_MIN_BYTES the layers run on several threads; results come back in order, errors raised."""
    import threading

    from fastlin.kernels import tuning

    monkeypatch.setattr(tuning, "HOST_THREADS_MIN_BYTES", 100)
    seen = set()

    def fn(k):
        seen.add(threading.get_ident())
        return k * k

    assert each_layer(fn, 9, 99) == [k * k for k in range(9)] and len(seen) == 1
    assert each_layer(fn, 9, 100) == [k * k for k in range(9)] and len(seen) > 1

    def fails(k):
        if k == 5:
            raise ValueError("layer 5")
        return k

    with pytest.raises(ValueError, match="layer 5"):
        each_layer(fails, 9, 100)
