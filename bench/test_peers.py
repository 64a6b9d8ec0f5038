"""The peers of bench/peers.py agree with fastlin's NumPy reference on small edge shapes.

Not benchmarks (``--benchmark-only`` skips them; every benchmark re-checks its
own backend on its own size). Run with ``python -m pytest bench/test_peers.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastlin
import peers
from fastlin.model import layer_rates, to_normalized

# (dx, n, dy, depth, width): L = 1 and 2, m < n, m = dy, dx > m, dx < m.
SHAPES = [(7, 5, 3, 1, 4), (7, 5, 3, 2, 4), (6, 5, 3, 3, 3), (4, 6, 2, 5, 9), (9, 4, 3, 10, 2)]
STEPS = 30


@pytest.mark.parametrize("dtype,rtol,steps", [("float64", 1e-10, STEPS), ("float32", 1e-4, 10)])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"dx{s[0]}-n{s[1]}-dy{s[2]}-L{s[3]}-m{s[4]}" for s in SHAPES])
@pytest.mark.parametrize("name", list(peers.PEERS))
def test_peer_matches_reference(name, shape, dtype, rtol, steps):
    if not peers.available(name):
        pytest.skip(f"{name} is not installed")
    dx, n, dy, depth, width = shape
    rng = np.random.default_rng(sum(shape))
    X = rng.standard_normal((dx, n)).astype(dtype)
    Y = rng.standard_normal((dy, n)).astype(dtype)
    dims = fastlin.network_dims(depth, width, dx, dy)
    V = to_normalized(fastlin.init_weights(dims, "gaussian", rng=rng), dims, np.dtype(dtype))
    # Half the Theorem 4.1 rate: a contracting run, so rounding does not grow.
    eta = layer_rates(0.5 * fastlin.theorem_lr(X, depth, dy), dims)
    expected = peers.reference_losses(V, X, Y, eta, steps)
    peer = peers.PEERS[name](V, X, Y, eta)
    np.testing.assert_allclose(peer.run(steps), expected, rtol=rtol)
    peer.reset()
    np.testing.assert_allclose(peer.run(steps), expected, rtol=rtol)
