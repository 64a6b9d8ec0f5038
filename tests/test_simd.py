"""The explicit-vector intrinsics of fastlin/kernels/simd.py against NumPy."""

import numba
import numpy as np
import pytest

from fastlin.kernels.llvm import load, madd, splat, store
from fastlin.kernels.tuning import LINE_BYTES


@numba.njit
def axpy_lines(x, y, a, out):
    """out = y + a x, one cache line of lanes at a time, via load / splat / madd / store."""
    W = LINE_BYTES // x.itemsize
    for c in range(0, x.size - W + 1, W):
        store(out, c, madd(load(y, c), splat(a), load(x, c)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vector_ops_match_numpy(dtype):
    rng = np.random.default_rng()
    W = LINE_BYTES // np.dtype(dtype).itemsize
    n = W * int(rng.integers(1, 6)) + 1  # one element past the last whole line
    x, y = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    a = dtype(rng.uniform(-2, 2))
    out = np.full(n, -7.0, dtype=dtype)
    axpy_lines(x[1:], y[1:], a, out[1:])  # unaligned views: loads and stores need no alignment
    y64, ax64 = y.astype(np.float64), float(a) * x.astype(np.float64)
    # fused or not, each lane is y + a x rounded once or twice: a few eps of |y| + |a x|
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(out[1:] - (y64 + ax64)[1:]) <= 4 * eps * (np.abs(y64) + np.abs(ax64))[1:])
    assert out[0] == -7.0  # nothing written outside the lines asked for


def test_vector_ops_refuse_non_contiguous_rows():
    x = np.zeros((8, 8))
    with pytest.raises(numba.TypingError, match="contiguous 1-D float array"):
        axpy_lines(x[:, 0], x[0], 1.0, x[1])
