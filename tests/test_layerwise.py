"""experiments.layerwise: Haar layers as Householder reflections, Θ(0) with one layer in memory."""

import numpy as np
import pytest
from scipy import stats

import fastlin
from fastlin import ntk
from fastlin.experiments import layerwise
from helpers import rel_err


@pytest.mark.parametrize("d, k", [(5, 5), (7, 3), (4, 1), (1, 1)])
def test_frame_has_orthonormal_columns_and_its_transpose_applies(d, k, rng):
    frame = layerwise.HaarFrame(d, k, rng)
    P = frame.apply(np.eye(k))
    assert P.shape == (d, k)
    assert np.max(np.abs(P.T @ P - np.eye(k))) < 1e-14
    M = rng.standard_normal((d, 4))
    assert rel_err(frame.apply_t(M), P.T @ M) < 1e-14


def test_frames_are_haar_distributed_like_haar_orthogonal():
    """O(3) moments E tr Q = 0, E (tr Q)² = 1, and the law of an entry of a 4 × 2 frame.

    Without Mezzadri's sign fix the first column would be −sign(x_1) x/‖x‖,
    with a negative first entry every time, and E tr Q would be about −1.
    """
    rng = np.random.default_rng(11)
    draws = 4000
    traces = np.array([np.trace(layerwise.HaarFrame(3, 3, rng).apply(np.eye(3))) for _ in range(draws)])
    assert abs(traces.mean()) < 4 / np.sqrt(draws)
    assert abs(np.mean(traces**2) - 1) < 0.1
    ours = np.array([layerwise.HaarFrame(4, 2, rng).apply(np.eye(2)) for _ in range(draws)])
    theirs = fastlin.haar_orthogonal(4, 2, batch=draws, rng=12)
    for i, j in [(0, 0), (3, 1), (2, 0)]:
        assert stats.ks_2samp(ours[:, i, j], theirs[:, i, j]).pvalue > 1e-3
    assert abs(ours[:, 0, 0].mean()) < 4 * 0.5 / np.sqrt(draws)


@pytest.mark.parametrize("rows, cols", [(6, 4), (4, 6), (5, 5)])
def test_orthogonal_layer_is_the_papers_scaled_haar_matrix(rows, cols):
    W = layerwise.layer([cols, rows], "orthogonal", 3, 1).dense()
    small, big = sorted((rows, cols))
    gram = W @ W.T if rows < cols else W.T @ W
    assert gram.shape == (small, small)
    assert np.max(np.abs(gram - big * np.eye(small))) < 1e-12


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
@pytest.mark.parametrize("dims", [[6, 9, 9, 4], [12, 5, 5, 7], [8, 3], [5, 7, 7, 7, 7, 2]])
def test_initial_factors_equal_the_factors_of_the_dense_weights(init, dims, rng):
    X = rng.standard_normal((dims[0], 4))
    streamed = layerwise.initial_factors(dims, init, 5, X)
    dense = ntk.factors(layerwise.weights(dims, init, 5), X)
    for a, b in zip(streamed, dense):
        assert rel_err(a, b) < 1e-12
    # the same seed draws the same net (Θ(0) of a wide orthogonal net is Θ_∞ for every
    # seed, so the weights are compared); another seed another one
    again = layerwise.initial_factors(dims, init, 5, X)
    assert all(np.array_equal(a, b) for a, b in zip(streamed, again))
    first, other = layerwise.weights(dims, init, 5), layerwise.weights(dims, init, 6)
    assert all(np.max(np.abs(a - b)) > 1e-3 for a, b in zip(first, other))


def test_wide_orthogonal_nets_are_exactly_the_infinite_ntk(rng):
    X = rng.standard_normal((12, 5))
    for depth in (2, 6):
        f = layerwise.initial_factors(fastlin.network_dims(depth, 16, 12, 3), "orthogonal", 0, X)
        assert ntk.distance(f, ntk.infinite(X, depth, 3)) < 1e-13


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="unknown init"):
        layerwise.layer([3, 4], "uniform", 0, 1)
    with pytest.raises(ValueError, match="X has 2 rows"):
        layerwise.initial_factors([3, 4, 2], "gaussian", 0, rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="1 <= k <= d"):
        layerwise.HaarFrame(2, 3, rng)
