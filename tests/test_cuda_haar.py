"""The GPU Haar sampler (issue 5): sign-fixed batched QR, same statistics as the CPU sampler.

The logic runs in CI with NumPy as the array module (what the sampler falls
back to without CuPy or a GPU); the CuPy path runs only where CuPy sees a GPU.
"""

import math

import numpy as np
import pytest
from scipy import stats

import fastlin
from fastlin.haar_gpu import gpu_array_module, haar_orthogonal_gpu, to_host
from test_init import N_HAAR, Z_LIMIT, haar_statistics, is_orthonormal

CUPY = gpu_array_module()
MODULES = [pytest.param(np, id="numpy"),
           pytest.param(CUPY, id="cupy", marks=pytest.mark.skipif(CUPY is None, reason="no CuPy with a GPU"))]


@pytest.mark.parametrize("xp", MODULES)
def test_gpu_haar_statistics_match_haar_measure(xp):
    n = 6
    Q = to_host(haar_orthogonal_gpu(n, batch=N_HAAR, seed=11, xp=xp))
    det_pos, z_tr, z_tr2, z_q11 = haar_statistics(Q)
    assert stats.binomtest(det_pos, N_HAAR, 0.5).pvalue > 1e-4
    assert max(abs(z_tr), abs(z_tr2), abs(z_q11)) < Z_LIMIT
    np.testing.assert_allclose(np.mean(Q**2, axis=0), 1 / n, atol=Z_LIMIT * math.sqrt(2 / N_HAAR) / n)


@pytest.mark.parametrize("xp", MODULES)
@pytest.mark.parametrize("shape", [(7, 7), (9, 4), (4, 9), (1, 5)])
def test_gpu_haar_orthonormal_shapes_and_dtypes(xp, shape):
    Q = to_host(haar_orthogonal_gpu(*shape, batch=3, seed=1, xp=xp))
    assert Q.shape == (3, *shape) and is_orthonormal(Q)
    single = to_host(haar_orthogonal_gpu(*shape, seed=1, dtype=np.float32, xp=xp))
    assert single.shape == shape and single.dtype == np.float32 and is_orthonormal(single, 1e-5)
    again = to_host(haar_orthogonal_gpu(*shape, batch=3, seed=1, xp=xp))
    assert np.array_equal(Q, again)


def test_init_weights_device_hook_gives_scaled_isometries():
    W1, W2, W3 = fastlin.init_weights([5, 8, 8, 3], "orthogonal", rng=2, device="cuda")
    np.testing.assert_allclose(W1.T @ W1, 8 * np.eye(5), atol=1e-10)
    np.testing.assert_allclose(W2 @ W2.T, 8 * np.eye(8), atol=1e-10)
    np.testing.assert_allclose(W3 @ W3.T, 8 * np.eye(3), atol=1e-10)
