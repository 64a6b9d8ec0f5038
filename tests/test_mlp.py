"""Nonlinear chains: init, the NumPy reference (central differences, the deep-linear model), the API."""

import math

import numpy as np
import pytest

import fastlin
from fastlin.data import one_hot
from fastlin.kernels.mlp import ACTIVATIONS, LOSSES, reference
from fastlin.kernels.mlp.batches import draw_batch, seed_state


def classification(rng, dims, n, dtype=np.float64):
    X = rng.standard_normal((dims[0], n)).astype(dtype)
    return X, one_hot(rng.integers(0, dims[-1], n), dims[-1], dtype)


# ---------------------------------------------------------------- init


@pytest.mark.parametrize("dims", [[30, 50, 50, 20], [80, 40, 120, 10]])
def test_orthogonal_init_has_the_gaussian_second_moments_exactly(rng, dims):
    sigma_w2 = 1.7
    weights, biases = fastlin.init_mlp(dims, "orthogonal", sigma_w2=sigma_w2, rng=rng)
    for i, W in enumerate(weights):
        d_out, d_in = dims[i + 1], dims[i]
        assert W.shape == (d_out, d_in)
        np.testing.assert_allclose(np.mean(W**2), sigma_w2 / d_in, rtol=1e-12)
        gram = W.T @ W if d_out >= d_in else W @ W.T
        scale = sigma_w2 * max(d_out, d_in) / d_in
        np.testing.assert_allclose(gram, scale * np.eye(min(d_out, d_in)), atol=1e-12 * scale)
    assert [b.shape for b in biases] == [(d,) for d in dims[1:]]


def test_gaussian_init_second_moments(rng):
    dims = [300, 400, 200]
    sigma_w2, sigma_b2 = 1.05, 0.3
    draws = [fastlin.init_mlp(dims, "gaussian", sigma_w2=sigma_w2, sigma_b2=sigma_b2, rng=rng) for _ in range(20)]
    for i in range(2):
        entries = np.concatenate([w[i].ravel() for w, _ in draws])
        # mean of squares of N iid normals: relative standard deviation sqrt(2 / N)
        assert abs(np.mean(entries**2) / (sigma_w2 / dims[i]) - 1) < 5 * math.sqrt(2 / entries.size)
        assert abs(np.mean(entries)) < 5 * math.sqrt(sigma_w2 / dims[i] / entries.size)
        b = np.concatenate([bs[i] for _, bs in draws])
        assert abs(np.mean(b**2) / sigma_b2 - 1) < 5 * math.sqrt(2 / b.size)


def test_init_is_reproducible_and_keeps_dtype():
    a = fastlin.init_mlp([5, 6, 3], "orthogonal", rng=3, dtype=np.float32)
    b = fastlin.init_mlp([5, 6, 3], "orthogonal", rng=3, dtype=np.float32)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kwargs, error", [
    (dict(dims=[5], init="gaussian"), ValueError),
    (dict(dims=[5, 0, 3], init="gaussian"), ValueError),
    (dict(dims=[5, 3], init="uniform"), ValueError),
    (dict(dims=[5, 3], init="gaussian", sigma_w2=0.0), ValueError),
    (dict(dims=[5, 3], init="gaussian", sigma_w2=math.inf), ValueError),
    (dict(dims=[5, 3], init="gaussian", sigma_b2=-1.0), ValueError),
    (dict(dims=[5, 3], init="gaussian", sigma_b2="1"), TypeError),
    (dict(dims=[5, 3], init="gaussian", dtype=np.int32), TypeError),
    (dict(dims=[5, 3], init="gaussian", rng="seed"), TypeError),
])
def test_init_bad_input_raises(kwargs, error):
    dims, init = kwargs.pop("dims"), kwargs.pop("init")
    with pytest.raises(error):
        fastlin.init_mlp(dims, init, **kwargs)


# ---------------------------------------------------------------- the reference


def _objective(weights, biases, X, Y, act, loss):
    _, f = reference.forward(weights, biases, X, act)
    return reference.objective(f, Y, loss)[0]


@pytest.mark.parametrize("activation", ["tanh", "linear", "relu"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_reference_gradients_are_central_differences(rng, activation, loss):
    dims = [5, 7, 6, 3]
    weights, biases = fastlin.init_mlp(dims, "gaussian", sigma_w2=2.0, sigma_b2=0.5, rng=rng)
    X, Y = classification(rng, dims, 9)
    if loss == "mse":
        Y = rng.standard_normal(Y.shape)
    act, code = ACTIVATIONS[activation], LOSSES[loss]
    _, grad_W, grad_b = reference.gradients(weights, biases, X, Y, act, code)
    eps = 1e-6
    for params, grads in ((weights, grad_W), (biases, grad_b)):
        for P, G in zip(params, grads):
            numeric = np.zeros_like(P)
            for idx in np.ndindex(P.shape):
                keep = P[idx]
                P[idx] = keep + eps
                up = _objective(weights, biases, X, Y, act, code)
                P[idx] = keep - eps
                down = _objective(weights, biases, X, Y, act, code)
                P[idx] = keep
                numeric[idx] = (up - down) / (2 * eps)
            np.testing.assert_allclose(G, numeric, rtol=1e-6, atol=1e-9 * np.max(np.abs(numeric)))


def test_cross_entropy_matches_its_definition(rng):
    f = rng.standard_normal((4, 6)) * 10
    Y = one_hot(rng.integers(0, 4, 6), 4)
    p = np.exp(f) / np.exp(f).sum(axis=0)
    expected = -np.mean(np.log(p[Y.astype(bool)]))
    value, grad = reference.objective(f, Y, LOSSES["cross_entropy"])
    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(grad, (p - Y) / 6, atol=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_linear_mse_full_batch_is_the_deep_linear_gd_of_train(rng, backend):
    """f = U_L...U_1 x with mean loss and rate lr is train's f = alpha W_L...W_1 x with summed loss and rate eta.

    With D = (prod_i d_i)^(1/L) (so alpha = D^(-L/2)): U_i = W_i / sqrt(D), lr = n eta / D,
    and train's loss = n * train_mlp's loss at every step.
    """
    dims, n = [12, 9, 7, 5], 6
    W = fastlin.init_weights(dims, "orthogonal", rng=rng)
    X, Y = fastlin.paper_data(rng, dx=dims[0], n=n, dy=dims[-1])
    eta = fastlin.theorem_lr(X, len(W), dims[-1])
    D = math.prod(dims[1:]) ** (1 / (len(dims) - 1))
    linear = fastlin.train(W, X, Y, lr=eta, steps=30, backend="numpy")
    U = [Wi / math.sqrt(D) for Wi in W]
    mlp = fastlin.train_mlp(U, None, X, Y, activation="linear", loss="mse", lr=n * eta / D, steps=30,
                            backend=backend)
    assert mlp.biases is None
    np.testing.assert_allclose(n * mlp.loss, linear.loss, rtol=1e-10)
    for Wi, Ui in zip(linear.weights, mlp.weights):
        np.testing.assert_allclose(Ui * math.sqrt(D), Wi, rtol=1e-10, atol=1e-12 * np.max(np.abs(Wi)))


# ---------------------------------------------------------------- batches


def test_batches_are_without_replacement_and_uniform():
    n, size, draws = 7, 3, 14000
    state, perm = seed_state(11), np.arange(n, dtype=np.int64)
    counts = np.zeros((size, n))
    for _ in range(draws):
        draw_batch(state, perm, size)
        assert len(set(perm[:size])) == size
        counts[np.arange(size), perm[:size]] += 1
        assert sorted(perm) == list(range(n))
    # every position takes every sample with probability 1/n
    expected = draws / n
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_minibatch_runs_are_reproducible(rng, backend):
    dims = [6, 8, 4]
    W, b = fastlin.init_mlp(dims, "gaussian", rng=rng)
    X, Y = classification(rng, dims, 20)
    run = lambda seed: fastlin.train_mlp(W, b, X, Y, lr=0.5, steps=10, batch_size=5, rng=seed,  # noqa: E731
                                         backend=backend)
    a, b_, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.loss, b_.loss)
    for x, y in zip(a.weights, b_.weights):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.loss, c.loss)
    from_generator = [fastlin.train_mlp(W, b, X, Y, lr=0.5, steps=10, batch_size=5, backend=backend,
                                        rng=np.random.default_rng(9)).loss for _ in range(2)]
    np.testing.assert_array_equal(*from_generator)


# ---------------------------------------------------------------- the driver


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_divergence_is_a_status(rng, backend):
    dims = [6, 10, 10, 3]
    W, b = fastlin.init_mlp(dims, "gaussian", rng=rng)
    X, Y = classification(rng, dims, 12)
    result = fastlin.train_mlp(W, b, X * 100, rng.standard_normal(Y.shape) * 100, activation="linear", loss="mse",
                               lr=1e3, steps=200, backend=backend)
    assert result.status == "diverged"
    t = result.steps_run
    assert 0 < t < 200 and not math.isfinite(result.loss[t]) and np.all(np.isfinite(result.loss[:t]))
    assert np.all(np.isnan(result.loss[t + 1:]))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_inputs_are_unchanged(rng, backend):
    dims = [5, 9, 4]
    W, b = fastlin.init_mlp(dims, "orthogonal", rng=rng)
    X, Y = classification(rng, dims, 11)
    Xt, Yt = classification(rng, dims, 4)
    copies = [a.copy() for a in W + b + [X, Y, Xt, Yt]]
    fastlin.train_mlp(W, b, X, Y, lr=0.3, steps=5, batch_size=4, rng=1, eval_every=2, X_test=Xt, Y_test=Yt,
                      backend=backend)
    for before, after in zip(copies, W + b + [X, Y, Xt, Yt]):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_accuracy_is_evaluated_on_schedule_and_stops_when_asked(rng, backend):
    dims = [6, 12, 3]
    W, b = fastlin.init_mlp(dims, "orthogonal", rng=rng)
    X, Y = classification(rng, dims, 30)
    Xt, Yt = classification(rng, dims, 10)
    result = fastlin.train_mlp(W, b, X, Y, lr=0.5, steps=10, batch_size=8, rng=2, eval_every=4, X_test=Xt,
                               Y_test=Yt, backend=backend)
    np.testing.assert_array_equal(result.eval_steps, [0, 4, 8])
    again = fastlin.train_mlp(W, b, X, Y, lr=0.5, steps=8, batch_size=8, rng=2, backend=backend)
    _, f = reference.forward(again.weights, again.biases, X, ACTIVATIONS["tanh"])
    assert result.train_accuracy[-1] == np.mean(np.argmax(f, 0) == np.argmax(Y, 0))
    _, f = reference.forward(again.weights, again.biases, Xt, ACTIVATIONS["tanh"])
    assert result.test_accuracy[-1] == np.mean(np.argmax(f, 0) == np.argmax(Yt, 0))
    target = result.train_accuracy[1]
    first = int(result.eval_steps[np.argmax(result.train_accuracy >= target)])  # 0 or 4
    stopped = fastlin.train_mlp(W, b, X, Y, lr=0.5, steps=10, batch_size=8, rng=2, eval_every=4,
                                stop_accuracy=target, backend=backend)
    assert stopped.status == "reached" and stopped.steps_run == first
    assert np.all(np.isnan(stopped.loss[first + 1:])) and np.all(np.isfinite(stopped.loss[:first + 1]))
    scheduled = fastlin.train_mlp(W, b, X, Y, lr=0.5, steps=10, batch_size=8, rng=2, eval_at=[8, 3, 0, 3, 12],
                                  backend=backend)
    np.testing.assert_array_equal(scheduled.eval_steps, [0, 3, 8])
    assert scheduled.train_accuracy[2] == result.train_accuracy[2]
    np.testing.assert_array_equal(scheduled.loss, result.loss)


def test_float32_stays_float32(rng):
    dims = [4, 6, 3]
    W, b = fastlin.init_mlp(dims, "gaussian", rng=rng, dtype=np.float32)
    X, Y = classification(rng, dims, 5, np.float32)
    result = fastlin.train_mlp(W, b, X, Y, lr=0.1, steps=3, backend="numpy")
    assert result.dtype == "float32" and all(w.dtype == np.float32 for w in result.weights + result.biases)
    converted = fastlin.train_mlp(W, b, X.astype(np.float64), Y, lr=0.1, steps=3, backend="numpy", dtype=np.float32)
    np.testing.assert_array_equal(converted.loss, result.loss)
    on_cpu = fastlin.train_mlp(W, b, X, Y, lr=0.1, steps=3, backend="cpu")
    assert on_cpu.dtype == "float32" and all(w.dtype == np.float32 for w in on_cpu.weights + on_cpu.biases)


def _bad_calls(rng):
    dims = [4, 5, 3]
    W, b = fastlin.init_mlp(dims, "gaussian", rng=rng)
    X, Y = classification(rng, dims, 6)
    ok = dict(weights=W, biases=b, X=X, Y=Y, lr=0.1, steps=2)
    nan_X = X.copy()
    nan_X[0, 0] = np.nan
    soft_Y = Y * 0.5
    big_X = X.copy()
    big_X[0, 0] = 1e39
    two_hot = Y.copy()
    two_hot[:, 0] = 1
    return ok, [
        (dict(weights=W[0]), TypeError, "weights"),
        (dict(weights=[W[0], W[0]]), ValueError, "shape chain"),
        (dict(biases=b[:1]), ValueError, "biases"),
        (dict(biases=[b[0], b[0]]), ValueError, "b_2"),
        (dict(biases=[b[0], np.array([np.inf, 0, 0])]), ValueError, "non-finite"),
        (dict(X=X[:3]), ValueError, "rows"),
        (dict(Y=Y[:2]), ValueError, "rows"),
        (dict(Y=Y[:, :4]), ValueError, "columns"),
        (dict(X=X[:, :0], Y=Y[:, :0]), ValueError, "at least one"),
        (dict(X=X.tolist()), TypeError, "2-D numpy array"),
        (dict(X=X.astype(np.int64)), TypeError, "dtype"),
        (dict(X=X.astype(np.float32)), TypeError, "mixed dtypes"),
        (dict(X=nan_X), ValueError, "non-finite"),
        (dict(Y=soft_Y), ValueError, "one-hot"),
        (dict(Y=two_hot), ValueError, "one-hot"),
        (dict(lr=0.0), ValueError, "lr"),
        (dict(lr=math.nan), ValueError, "lr"),
        (dict(lr="0.1"), TypeError, "lr"),
        (dict(steps=-1), ValueError, "steps"),
        (dict(steps=2.0), TypeError, "steps"),
        (dict(batch_size=7), ValueError, "larger than"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=2.5), TypeError, "batch_size"),
        (dict(activation="sigmoid"), ValueError, "activation"),
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(backend="tpu"), ValueError, "backend"),
        (dict(eval_every=0), ValueError, "eval_every"),
        (dict(X_test=X), ValueError, "together"),
        (dict(X_test=X, Y_test=Y), ValueError, "eval_every"),
        (dict(X_test=X[:3], Y_test=Y, eval_every=1), ValueError, "X_test"),
        (dict(stop_accuracy=0.5), ValueError, "eval_every"),
        (dict(eval_every=2, eval_at=[1]), ValueError, "not both"),
        (dict(eval_at=[1, -1]), ValueError, "eval_at"),
        (dict(eval_at=[1.5]), ValueError, "eval_at"),
        (dict(eval_at=3), TypeError, "eval_at"),
        (dict(stop_accuracy=1.5, eval_every=1), ValueError, "stop_accuracy"),
        (dict(rng="seed", batch_size=2), TypeError, "rng"),
        (dict(rng=-1, batch_size=2), ValueError, "rng"),
        (dict(dtype=np.float16), TypeError, "dtype"),
        (dict(X=big_X, dtype=np.float32), ValueError, "float32's range"),
        (dict(lr=1e39, dtype=np.float32), ValueError, "lr"),
        (dict(lr=1e-50, dtype=np.float32), ValueError, "lr"),
        (dict(eval_at=[], stop_accuracy=0.5), ValueError, "stop_accuracy"),
        (dict(eval_at=[5], X_test=X, Y_test=Y), ValueError, "test set"),
    ]


def test_every_bad_input_raises(rng):
    ok, cases = _bad_calls(rng)
    fastlin.train_mlp(**{**ok, "backend": "numpy"})
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            fastlin.train_mlp(**{**ok, "backend": "numpy", **change})


def test_mse_takes_real_targets(rng):
    dims = [4, 5, 3]
    W, b = fastlin.init_mlp(dims, "gaussian", rng=rng)
    X = rng.standard_normal((4, 6))
    result = fastlin.train_mlp(W, b, X, rng.standard_normal((3, 6)), loss="mse", lr=0.1, steps=2, backend="numpy")
    assert result.status == "completed"


# ---------------------------------------------------------------- digits


def test_digits_split_and_standardization():
    X, Y, Xt, Yt = fastlin.digits()
    assert X.shape == (64, 1437) and Y.shape == (10, 1437) and Xt.shape == (64, 360) and Yt.shape == (10, 360)
    assert np.all(Y.sum(axis=0) == 1) and np.all(Yt.sum(axis=0) == 1) and set(np.unique(Y)) == {0.0, 1.0}
    np.testing.assert_allclose(X.mean(axis=1), 0, atol=1e-12)
    std = X.std(axis=1)
    assert np.all((np.abs(std - 1) < 1e-12) | (std == 0))
    again = fastlin.digits()
    for a, b in zip(again, (X, Y, Xt, Yt)):
        np.testing.assert_array_equal(a, b)
    other = fastlin.digits(rng=1)
    assert not np.array_equal(other[0], X)
    small = fastlin.digits(test_size=100, dtype=np.float32)
    assert small[0].shape == (64, 1697) and small[0].dtype == np.float32
    with pytest.raises(ValueError, match="test_size"):
        fastlin.digits(test_size=1797)
    with pytest.raises(TypeError, match="test_size"):
        fastlin.digits(test_size=0.2)
