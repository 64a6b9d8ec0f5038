"""Random samplers: Haar-orthogonal matrices, the paper's weight inits and data.

* :func:`haar_orthogonal` draws from the Haar measure by the QR method of
  Mezzadri (2007): Q from the QR of a Gaussian matrix, with the signs of
  diag(R) folded into Q (without that fix Q is *not* Haar-distributed).
* :func:`init_weights` builds the raw paper weights W_i of Hu, Xiao &
  Pennington (ICLR 2020): iid N(0, 1) (Gaussian) or
  sqrt(max(d_i, d_{i-1})) times a Haar matrix (orthogonal, eq. (4)).
* :func:`paper_data` draws the synthetic regression task of Section 6.
"""

from __future__ import annotations

import numpy as np

from .model import check_dims, check_dtype, check_positive_int

INITS = ("gaussian", "orthogonal")

# Largest stack of Gaussian matrices handed to one batched QR call, in
# float64 numbers: bounds the peak memory of the orthogonal init at paper
# scale (700 matrices of 1000 x 1000 would be 5.6 GB in one stack).
_QR_STACK_NUMBERS = 1 << 24


def as_generator(rng) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from a seed, a Generator or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng must be a non-negative int seed, got {rng}")
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be an int seed, a numpy.random.Generator or None, got {type(rng).__name__}")


def _haar_stack(rng: np.random.Generator, batch: int, rows: int, cols: int) -> np.ndarray:
    """``batch`` Haar matrices of shape (rows, cols), rows >= cols, float64.

    One stacked QR per memory-bounded group of the batch (numpy's ``qr``
    factors a stack in one call); the sign of diag(R) is folded into Q.
    """
    out = np.empty((batch, rows, cols))
    group = max(1, _QR_STACK_NUMBERS // (rows * cols))
    for start in range(0, batch, group):
        stop = min(batch, start + group)
        Z = rng.standard_normal((stop - start, rows, cols))
        Q, R = np.linalg.qr(Z)
        signs = np.sign(np.diagonal(R, axis1=-2, axis2=-1))
        signs[signs == 0] = 1.0
        out[start:stop] = Q * signs[:, None, :]
    return out


def haar_orthogonal(rows, cols=None, *, batch=None, rng=None, dtype=np.float64) -> np.ndarray:
    """Haar-distributed matrix with orthonormal columns (rows >= cols) or rows.

    Parameters
    ----------
    rows, cols : int
        Shape of each matrix; ``cols`` defaults to ``rows`` (a Haar element
        of O(rows)).
    batch : int, optional
        If given, return a stack of ``batch`` independent matrices, shape
        ``(batch, rows, cols)``, factored with batched QR calls.
    rng : int, numpy.random.Generator or None
        Seed or generator; the same seed gives the same matrices.
    dtype : float64 or float32
        Sampling is done in float64 and rounded once to ``dtype``.

    Returns
    -------
    ndarray of shape ``(rows, cols)`` or ``(batch, rows, cols)``.
    Q^T Q = I when rows >= cols, Q Q^T = I otherwise.
    """
    rows = check_positive_int(rows, "rows")
    cols = rows if cols is None else check_positive_int(cols, "cols")
    n_batch = 1 if batch is None else check_positive_int(batch, "batch")
    dtype = check_dtype(dtype)
    gen = as_generator(rng)
    tall = rows >= cols
    Q = _haar_stack(gen, n_batch, max(rows, cols), min(rows, cols))
    if not tall:
        Q = Q.transpose(0, 2, 1)
    Q = np.ascontiguousarray(Q, dtype=dtype)
    return Q[0] if batch is None else Q


def network_dims(depth, width, dx, dy) -> list[int]:
    """Layer sizes ``[d_0, ..., d_L] = [dx, m, ..., m, dy]`` of a depth-L net."""
    depth = check_positive_int(depth, "depth")
    width = check_positive_int(width, "width")
    dx = check_positive_int(dx, "dx")
    dy = check_positive_int(dy, "dy")
    return [dx] + [width] * (depth - 1) + [dy]


def init_weights(dims, init, *, rng=None, dtype=np.float64, device="cpu") -> list[np.ndarray]:
    """Raw paper weights W_1..W_L, W_i of shape ``(dims[i], dims[i-1])``.

    ``init="gaussian"``: entries iid N(0, 1).
    ``init="orthogonal"``: W_i = sqrt(max(d_i, d_{i-1})) * Q, Q Haar with
    orthonormal columns or rows (eq. (4) of Hu et al.); E[W_ij^2] = 1 as for
    the Gaussian on every square layer. Equal-shaped layers are sampled with
    one batched QR; ``device="cuda"`` runs it on the GPU
    (:mod:`fastlin.haar_gpu`, other random draws than on the CPU).
    """
    dims = check_dims(dims)
    dtype = check_dtype(dtype)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    gen = as_generator(rng)
    shapes = [(dims[i], dims[i - 1]) for i in range(1, len(dims))]
    if init == "gaussian":
        return [gen.standard_normal(shape).astype(dtype, copy=False) for shape in shapes]
    weights: list[np.ndarray | None] = [None] * len(shapes)
    # Group layers by shape (all hidden layers share one), keeping the draw
    # order a pure function of the seed and dims.
    for shape in dict.fromkeys(shapes):
        where = [k for k, s in enumerate(shapes) if s == shape]
        if device == "cuda":
            from .haar_gpu import haar_orthogonal_gpu, to_host

            seed = int(gen.integers(2**63))
            stack = to_host(haar_orthogonal_gpu(*shape, batch=len(where), seed=seed))
        else:
            stack = haar_orthogonal(*shape, batch=len(where), rng=gen, dtype=np.float64)
        stack *= np.sqrt(max(shape))
        for k, Q in zip(where, stack):
            weights[k] = np.ascontiguousarray(Q, dtype=dtype)
    return weights


def paper_data(rng=None, dx=1024, n=16, dy=10, dtype=np.float64):
    """The regression task of Section 6: X (dx x n), W* (dy x dx) iid N(0,1), Y = W* X."""
    dx = check_positive_int(dx, "dx")
    n = check_positive_int(n, "n")
    dy = check_positive_int(dy, "dy")
    dtype = check_dtype(dtype)
    gen = as_generator(rng)
    X = gen.standard_normal((dx, n))
    W_star = gen.standard_normal((dy, dx))
    return X.astype(dtype), (W_star @ X).astype(dtype)
