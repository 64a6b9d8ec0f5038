"""Haar sampler, weight inits and data (issue: foundation)."""

import math

import numpy as np
import pytest
from scipy import stats

import fastlin
from fastlin.init import _haar_stack


def is_orthonormal(Q, tol=1e-12):
    r, c = Q.shape[-2:]
    G = Q.swapaxes(-1, -2) @ Q if r >= c else Q @ Q.swapaxes(-1, -2)
    return np.max(np.abs(G - np.eye(min(r, c)))) < tol


@pytest.mark.parametrize("shape", [(7, 7), (9, 4), (4, 9), (1, 5), (5, 1), (64, 64)])
def test_haar_orthonormal(shape):
    Q = fastlin.haar_orthogonal(*shape, rng=1)
    assert Q.shape == shape and Q.dtype == np.float64
    assert is_orthonormal(Q)


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8)])
def test_haar_batched(shape):
    Q = fastlin.haar_orthogonal(*shape, batch=11, rng=2)
    assert Q.shape == (11, *shape)
    assert is_orthonormal(Q)
    assert not np.allclose(Q[0], Q[1])


def test_haar_float32():
    Q = fastlin.haar_orthogonal(20, 5, rng=3, dtype=np.float32)
    assert Q.dtype == np.float32 and is_orthonormal(Q, 1e-5)


def test_haar_seed_reproducible():
    a = fastlin.haar_orthogonal(10, batch=3, rng=42)
    b = fastlin.haar_orthogonal(10, batch=3, rng=np.random.default_rng(42))
    c = fastlin.haar_orthogonal(10, batch=3, rng=43)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def haar_statistics(Q):
    """Statistics of a stack of n x n matrices that pin down the Haar law.

    Returns the number with det > 0, and z-scores of the sample means of
    tr Q (Haar: mean 0, var 1), (tr Q)^2 (mean 1; var 2 for n >= 4) and Q_11^2
    (mean 1/n, var 3/(n(n+2)) - 1/n^2).
    """
    N, n = Q.shape[0], Q.shape[1]
    det_pos = int(np.sum(np.linalg.det(Q) > 0))
    tr = np.trace(Q, axis1=1, axis2=2)
    q11 = Q[:, 0, 0] ** 2
    var_q11 = 3 / (n * (n + 2)) - 1 / n**2
    z_tr = tr.mean() / math.sqrt(1 / N)
    z_tr2 = (np.mean(tr**2) - 1) / math.sqrt(2 / N)
    z_q11 = (q11.mean() - 1 / n) / math.sqrt(var_q11 / N)
    return det_pos, z_tr, z_tr2, z_q11


N_HAAR = 4000
Z_LIMIT = 4.5  # two-sided p ~ 7e-6 per statistic: no false alarms, yet the unfixed QR fails by > 20 sigma


def test_haar_statistics_match_haar_measure():
    n = 6
    Q = fastlin.haar_orthogonal(n, batch=N_HAAR, rng=11)
    det_pos, z_tr, z_tr2, z_q11 = haar_statistics(Q)
    assert stats.binomtest(det_pos, N_HAAR, 0.5).pvalue > 1e-4
    assert abs(z_tr) < Z_LIMIT
    assert abs(z_tr2) < Z_LIMIT
    assert abs(z_q11) < Z_LIMIT
    # Every entry has second moment 1/n.
    np.testing.assert_allclose(np.mean(Q**2, axis=0), 1 / n, atol=Z_LIMIT * math.sqrt(2 / N_HAAR) / n)


def test_haar_statistics_catch_missing_sign_fix():
    """A QR without the sign fix is not Haar; the same statistics must reject it."""
    n = 6
    Z = np.random.default_rng(11).standard_normal((N_HAAR, n, n))
    Q_unfixed, _ = np.linalg.qr(Z)
    det_pos, z_tr, z_tr2, z_q11 = haar_statistics(Q_unfixed)
    rejected = [
        stats.binomtest(det_pos, N_HAAR, 0.5).pvalue <= 1e-4,
        abs(z_tr) >= Z_LIMIT,
        abs(z_tr2) >= Z_LIMIT,
        abs(z_q11) >= Z_LIMIT,
    ]
    assert any(rejected), "Haar statistics failed to detect a QR without the sign fix"
    # and the fixed version from the same Gaussian draws passes
    Q_fixed = _haar_stack(np.random.default_rng(11), N_HAAR, n, n)
    det_pos, z_tr, z_tr2, z_q11 = haar_statistics(Q_fixed)
    assert max(abs(z_tr), abs(z_tr2), abs(z_q11)) < Z_LIMIT


@pytest.mark.parametrize("bad, exc", [((0,), ValueError), ((-3,), ValueError), ((2.5,), TypeError),
                                      ((3, 0), ValueError)])
def test_haar_bad_shapes(bad, exc):
    with pytest.raises(exc):
        fastlin.haar_orthogonal(*bad)


def test_haar_bad_rng_and_dtype():
    with pytest.raises(TypeError):
        fastlin.haar_orthogonal(3, rng="seed")
    with pytest.raises(TypeError):
        fastlin.haar_orthogonal(3, dtype=np.int64)
    with pytest.raises(ValueError):
        fastlin.haar_orthogonal(3, batch=0)


def test_network_dims():
    assert fastlin.network_dims(1, 50, 1024, 10) == [1024, 10]
    assert fastlin.network_dims(3, 50, 1024, 10) == [1024, 50, 50, 10]
    with pytest.raises(ValueError):
        fastlin.network_dims(0, 50, 1024, 10)


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_init_shapes_and_second_moments(init):
    dims = [30, 40, 40, 40, 8]
    Ws = fastlin.init_weights(dims, init, rng=5)
    assert [W.shape for W in Ws] == [(40, 30), (40, 40), (40, 40), (8, 40)]
    # Square layers: E[W_ij^2] = 1 exactly for both inits; average many draws.
    samples = np.stack([fastlin.init_weights([40, 40, 40], init, rng=s)[1] for s in range(200)])
    second = np.mean(samples**2)
    assert abs(second - 1) < 5 * math.sqrt(2 / samples.size) + 1e-12
    assert abs(np.mean(samples)) < 5 / math.sqrt(samples.size)


def test_orthogonal_init_scaling_rectangular():
    dims = [30, 40, 40, 8]
    W1, W2, W3 = fastlin.init_weights(dims, "orthogonal", rng=6)
    np.testing.assert_allclose(W1.T @ W1, 40 * np.eye(30), atol=1e-10)  # tall: orthonormal cols
    np.testing.assert_allclose(W3 @ W3.T, 40 * np.eye(8), atol=1e-10)  # wide: orthonormal rows
    np.testing.assert_allclose(W2 @ W2.T, 40 * np.eye(40), atol=1e-10)


def test_lemma_4_2_partial_products_are_scaled_isometries():
    """Lemma 4.2: every product W_j...W_i of hidden m x m layers has all singular values m^((j-i+1)/2)."""
    m = 12
    dims = [20] + [m] * 6 + [5]
    Ws = fastlin.init_weights(dims, "orthogonal", rng=7)
    hidden = Ws[1:-1]
    for i in range(len(hidden)):
        P = np.eye(m)
        for j in range(i, len(hidden)):
            P = hidden[j] @ P
            s = np.linalg.svd(P, compute_uv=False)
            np.testing.assert_allclose(s, m ** ((j - i + 1) / 2), rtol=1e-10)


def test_init_reproducible_and_errors():
    a = fastlin.init_weights([5, 6, 6, 3], "orthogonal", rng=9)
    b = fastlin.init_weights([5, 6, 6, 3], "orthogonal", rng=9)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="unknown init"):
        fastlin.init_weights([5, 6, 3], "xavier")
    with pytest.raises(ValueError):
        fastlin.init_weights([5, 0, 3], "gaussian")
    with pytest.raises(ValueError):
        fastlin.init_weights([5], "gaussian")
    assert fastlin.init_weights([5, 6, 3], "gaussian", dtype=np.float32)[0].dtype == np.float32


def test_paper_data():
    X, Y = fastlin.paper_data(rng=0)
    assert X.shape == (1024, 16) and Y.shape == (10, 16)
    X2, Y2 = fastlin.paper_data(rng=0)
    assert np.array_equal(X, X2) and np.array_equal(Y, Y2)
    # Y = W* X: Y lies in the row space generated by X's columns, i.e. Y = (Y X^+) X.
    np.testing.assert_allclose(Y @ np.linalg.pinv(X) @ X, Y, rtol=1e-8, atol=1e-8)


def test_theorem_lr():
    X = np.diag([3.0, 1.0])
    assert fastlin.theorem_lr(X, 4, 10) == pytest.approx(10 / (2 * 4 * 9))
    with pytest.raises(ValueError):
        fastlin.theorem_lr(np.zeros((2, 2)), 4, 10)
    with pytest.raises(ValueError):
        fastlin.theorem_lr(X, 0, 10)
