"""Θ(0) of nets drawn one layer at a time: memory of one layer, no QR for orthogonal layers.

The NTK at init needs only the chains A_i = V_{i−1}⋯V_1 X (d_{i−1} × n) and
B_i = V_L⋯V_{i+1} (d_y × d_i). Here layer i is drawn from its own generator
``numpy.random.default_rng([seed, i])``, applied to the chain and dropped;
the upward pass (A) and the downward pass (B) draw it twice, identically.
So a net of depth 32 and width 2048 (1 GiB of weights) needs one layer's
memory at a time.

Orthogonal layers are never formed: a Haar matrix is kept as the
Householder reflections that a QR of a Gaussian matrix would produce. In
Householder QR of a d × k Gaussian matrix Z = H_1⋯H_k [R; 0], reflector H_j
is built from the trailing part x_j of column j after H_1..H_{j−1}, which
by rotation invariance is a fresh N(0, I_{d−j+1}) vector independent of the
others; Q = H_1⋯H_k [I_k; 0] diag(sign r_jj) is Haar (Mezzadri 2007: the
sign of diag(R) folded into Q), as :func:`fastlin.haar_orthogonal` draws
it. Drawing the x_j costs d·k normals instead of the O(d k²) flops of a QR
(1.3 s for one 2048 × 2048 matrix on 2 cores), and applying Q to a thin
matrix costs O(d k c), as a product with the dense Q would.
"""

from __future__ import annotations

import math

import numpy as np

from ..model import check_dims
from ..ntk import NTKFactors


def layer_rng(seed: int, i: int) -> np.random.Generator:
    """The generator of layer i (1-based) of the net drawn with ``seed``."""
    return np.random.default_rng([int(seed), int(i)])


class HaarFrame:
    """A Haar-distributed d × k matrix P (d ≥ k, PᵀP = I_k), kept as k Householder reflections.

    P = H_1⋯H_k [D; 0], H_j = I − τ_j v_j v_jᵀ acting on coordinates j..d,
    D = diag(sign β_j), where β_j = −sign(x_j1)‖x_j‖ is the diagonal of R.
    """

    def __init__(self, d: int, k: int, rng: np.random.Generator):
        if not 1 <= k <= d:
            raise ValueError(f"a frame needs 1 <= k <= d, got d = {d}, k = {k}")
        self.d, self.k = d, k
        self.v, self.tau = [], np.empty(k)
        self.sign = np.empty(k)
        for j in range(k):
            x = rng.standard_normal(d - j)
            norm = math.sqrt(float(x @ x))
            beta = -norm if x[0] >= 0 else norm
            x[0] -= beta  # v = x − β e_1, so that H x = β e_1
            vv = float(x @ x)
            self.v.append(x)
            self.tau[j] = 2.0 / vv if vv > 0 else 0.0
            self.sign[j] = 1.0 if beta >= 0 else -1.0

    def apply(self, M: np.ndarray) -> np.ndarray:
        """P M for M of shape (k, c)."""
        Y = np.zeros((self.d, M.shape[1]))
        Y[:self.k] = self.sign[:, None] * M
        for j in range(self.k - 1, -1, -1):
            v = self.v[j]
            Y[j:] -= np.outer(self.tau[j] * v, v @ Y[j:])
        return Y

    def apply_t(self, M: np.ndarray) -> np.ndarray:
        """Pᵀ M for M of shape (d, c)."""
        Y = np.array(M, dtype=np.float64)
        for j in range(self.k):
            v = self.v[j]
            Y[j:] -= np.outer(self.tau[j] * v, v @ Y[j:])
        return self.sign[:, None] * Y[:self.k]


class Layer:
    """Raw layer W_i (d_i × d_{i−1}) of the paper's init, as the maps u ↦ V_i u and w ↦ V_iᵀ w.

    Gaussian: entries iid N(0, 1). Orthogonal: sqrt(max(d_i, d_{i−1})) Q with
    Q Haar, orthonormal columns (tall) or rows (wide), as
    :func:`fastlin.init_weights` (which draws other numbers for the same seed).
    V_i = W_i / sqrt(d_i).
    """

    def __init__(self, rows: int, cols: int, init: str, rng: np.random.Generator):
        self.rows, self.cols, self.init = rows, cols, init
        self.scale = 1.0 / math.sqrt(rows)
        if init == "gaussian":
            self.W = rng.standard_normal((rows, cols))
        elif init == "orthogonal":
            self.scale *= math.sqrt(max(rows, cols))
            self.frame = HaarFrame(max(rows, cols), min(rows, cols), rng)
        else:
            raise ValueError(f"unknown init {init!r}; choose 'gaussian' or 'orthogonal'")

    def forward(self, U: np.ndarray) -> np.ndarray:
        """V_i U for U of shape (d_{i−1}, c)."""
        if self.init == "gaussian":
            return self.scale * (self.W @ U)
        tall = self.rows >= self.cols  # Q = P (tall) or Pᵀ (wide)
        return self.scale * (self.frame.apply(U) if tall else self.frame.apply_t(U))

    def backward(self, Wt: np.ndarray) -> np.ndarray:
        """V_iᵀ w for w of shape (d_i, c)."""
        if self.init == "gaussian":
            return self.scale * (self.W.T @ Wt)
        tall = self.rows >= self.cols
        return self.scale * (self.frame.apply_t(Wt) if tall else self.frame.apply(Wt))

    def dense(self) -> np.ndarray:
        """The raw W_i = sqrt(d_i) V_i itself (for small layers and tests)."""
        return self.forward(np.eye(self.cols)) * math.sqrt(self.rows)


def layer(dims, init: str, seed: int, i: int) -> Layer:
    """Layer i (1-based) of the net of widths ``dims`` drawn with ``seed``."""
    return Layer(dims[i], dims[i - 1], init, layer_rng(seed, i))


def weights(dims, init: str, seed: int) -> list[np.ndarray]:
    """The raw weights W_1..W_L that :func:`initial_factors` draws, as dense arrays (small nets)."""
    dims = check_dims(dims)
    return [layer(dims, init, seed, i).dense() for i in range(1, len(dims))]


def initial_factors(dims, init: str, seed: int, X: np.ndarray) -> NTKFactors:
    """Θ(0)'s factors (c_i = 1/d_i, G_i = A_iᵀA_i, H_i = B_iB_iᵀ) of the net drawn with ``seed``.

    Equal to ``fastlin.ntk.factors(weights(dims, init, seed), X)`` up to
    rounding, with the memory of one layer (and the chains: L(d n + d_y d)
    numbers at most, freed as the factors are formed).
    """
    dims = check_dims(dims)
    L = len(dims) - 1
    if X.shape[0] != dims[0]:
        raise ValueError(f"X has {X.shape[0]} rows, expected d_0 = {dims[0]}")
    n, dy = X.shape[1], dims[-1]
    G = np.empty((L, n, n))
    H = np.empty((L, dy, dy))
    A = np.asarray(X, dtype=np.float64)
    for i in range(1, L + 1):  # up: G_i from A_i, then A_{i+1} = V_i A_i
        G[i - 1] = A.T @ A
        if i < L:
            A = layer(dims, init, seed, i).forward(A)
    Bt = np.eye(dy)  # B_iᵀ, d_i × d_y
    for i in range(L, 0, -1):  # down: H_i from B_i, then B_{i−1}ᵀ = V_iᵀ B_iᵀ
        H[i - 1] = Bt.T @ Bt
        if i > 1:
            Bt = layer(dims, init, seed, i).backward(Bt)
    return NTKFactors(np.array([1.0 / d for d in dims[1:]]), G, H)
