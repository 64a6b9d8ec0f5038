"""The neural tangent kernel Θ(t) of GD on a deep linear net, kept as its Kronecker factors.

GD on the raw weights W_i with rate η moves the outputs on the training set
by Δvec f = −η Θ(t) vec E + O(η²) (P(t) of Hu, Xiao & Pennington 2020,
eq. (7); the empirical NTK of Huang, Du & Xu 2021), where, in the normalized
form V_i = W_i / sqrt(d_i) with prefix chains A_i = V_{i−1}⋯V_1 X
(d_{i−1} × n) and suffix chains B_i = V_L⋯V_{i+1} (d_y × d_i),

    Θ = Σ_{i=1..L} c_i G_i ⊗ H_i,   c_i = 1/d_i,  G_i = A_iᵀA_i (n × n),  H_i = B_iB_iᵀ (d_y × d_y).

vec is sample-major: row and column ``j*dy + k`` of Θ is (sample j,
output k), so a vector v of length n·d_y is ``M.ravel()`` of an (n, d_y)
matrix M = Eᵀ, and Θ v = vec(Σ_i c_i G_i M H_i).

fastlin keeps the factors (L(n² + d_y²) numbers), not the Gram
((n d_y)² numbers): spectra, norms and distances are computed from them.
Everything is accumulated in float64 whatever the dtype of the weights.

Infinite width: Θ_∞ = (L/d_y) XᵀX ⊗ I_{d_y} (every layer adds (1/d_y) XᵀX ⊗ I).
Gaussian init has E Θ(0) = Θ_∞; orthogonal init with m ≥ max(d_x, d_y) has
Θ(0) = Θ_∞ exactly (Lemma 4.2 of Hu et al.).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .kernels.host import one_blas_thread
from .model import DTYPES, check_dims, check_positive_int, weight_dims

# Θ is formed densely (and its spectrum taken with LAPACK) up to this many
# rows n·d_y; beyond, `eigs` iterates with the matrix-free product.
DENSE_MAX_ROWS = 3000
# lr="auto" is AUTO_LR_SCALE / λ_max(Θ(0)). At 1 (half the stability edge) 8 of
# 72 nets of depth 4-32 and width 13-64 on the paper's data diverged within
# 1000 steps (7 of them orthogonal: λ_max grows during training in narrow
# nets) and most orthogonal ones oscillated; at 0.5 none diverged and 31 of
# 36 orthogonal nets converged below 1e-3 (bench/investigations/auto_lr.py).
AUTO_LR_SCALE = 0.5
# `gram` refuses to form a Θ with more rows than this (16384² float64 = 2 GiB).
GRAM_MAX_ROWS = 16384
# Residual tolerances of ARPACK in the matrix-free `eigs`, tried in turn (on
# λ_max, and on λ_max − λ_min for λ_min, so λ_min is accurate to about the
# tolerance used times λ_max; measured errors were 1e-7..1e-16 of λ_max).
EIGS_TOLS = (1e-10, 1e-6)


class NTKFactors(NamedTuple):
    """Θ = Σ_i c_i G_i ⊗ H_i, as float64 arrays.

    c : (K,) = 1/d_i for the K = L layers of a net (:func:`infinite` uses one term).
    G : (K, n, n), G_i = A_iᵀ A_i.
    H : (K, d_y, d_y), H_i = B_i B_iᵀ.
    """

    c: np.ndarray
    G: np.ndarray
    H: np.ndarray

    @property
    def n(self) -> int:
        """Number of samples."""
        return self.G.shape[1]

    @property
    def dy(self) -> int:
        """Number of outputs d_y."""
        return self.H.shape[1]

    @property
    def rows(self) -> int:
        """n·d_y, the side of the Gram matrix Θ."""
        return self.n * self.dy


# -- building the factors ---------------------------------------------------------------


def _check_data(M, name: str, rows: int | None = None) -> np.ndarray:
    if not isinstance(M, np.ndarray) or M.ndim != 2:
        raise TypeError(f"{name} must be a 2-D numpy array, got {type(M).__name__}"
                        + (f" with ndim {M.ndim}" if isinstance(M, np.ndarray) else ""))
    if M.dtype not in DTYPES:
        raise TypeError(f"{name} has dtype {M.dtype}; expected float64 or float32")
    if rows is not None and M.shape[0] != rows:
        raise ValueError(f"{name} has {M.shape[0]} rows, expected {rows}")
    if M.shape[1] < 1:
        raise ValueError(f"{name} needs at least one column (sample)")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return M


def factors(weights, X) -> NTKFactors:
    """Θ's factors for raw paper weights W_1..W_L and inputs X (d_0 × n).

    V_i = W_i / sqrt(d_i), A_1 = X, A_{i+1} = V_i A_i, B_L = I,
    B_{i−1} = B_i V_i, all in float64 (float32 weights are widened, not
    rounded further). Cost L·m²·(n + d_y) flops for the chains, L·m·(n² + d_y²)
    for the factors.
    """
    dims = weight_dims(weights)
    for i, W in enumerate(weights, start=1):
        _check_data(W, f"W_{i}")
    _check_data(X, "X", rows=dims[0])
    L = len(weights)
    V = [np.asarray(W, dtype=np.float64) / math.sqrt(dims[i]) for i, W in enumerate(weights, start=1)]
    with one_blas_thread():  # skinny products: see kernels/host.py
        A = [np.asarray(X, dtype=np.float64)]
        for Vi in V[:-1]:
            A.append(Vi @ A[-1])
        B = [np.eye(dims[-1])]
        for Vi in reversed(V[1:]):
            B.append(B[-1] @ Vi)
        B.reverse()  # B[i-1] = B_i for i = 1..L
        return _assemble(dims, A[:L], B[:L])


def _assemble(dims, A, B) -> NTKFactors:
    """Factors from A_1..A_L and B_1..B_L (any float dtype), accumulated in float64."""
    L = len(dims) - 1
    n, dy = A[0].shape[1], B[0].shape[0]
    c = np.array([1.0 / d for d in dims[1:]])
    G = np.empty((L, n, n))
    H = np.empty((L, dy, dy))
    for i in range(L):
        Ai = np.asarray(A[i], dtype=np.float64)
        Bi = np.asarray(B[i], dtype=np.float64)
        np.matmul(Ai.T, Ai, out=G[i])
        np.matmul(Bi, Bi.T, out=H[i])
    return NTKFactors(c, G, H)


def factors_from_chains(chains, dims) -> NTKFactors:
    """Θ's factors from recorded chains (a :class:`fastlin.Chains` or a tuple (A, B, E)).

    ``chains.A[i−1]`` = A_i (i = 1..L+1), ``chains.B[i]`` = B_i (i = 0..L),
    as :func:`fastlin.train` records them, in float32 or float64; the
    products are accumulated in float64. ``dims`` = [d_0, ..., d_L].
    """
    dims = check_dims(dims)
    L = len(dims) - 1
    try:
        A, B = chains[0], chains[1]
    except (TypeError, IndexError, KeyError):
        raise TypeError("chains must be a fastlin.Chains or a tuple (A, B, E)") from None
    if len(A) != L + 1 or len(B) != L + 1:
        raise ValueError(f"chains of a depth-{L} net need L+1 = {L + 1} prefix and suffix chains, "
                         f"got {len(A)} and {len(B)}")
    dy = dims[-1]
    n = None
    for i in range(1, L + 1):
        Ai = _check_data(A[i - 1], f"A_{i}", rows=dims[i - 1])
        Bi = _check_data(B[i], f"B_{i}")
        if n is None:
            n = Ai.shape[1]
        elif Ai.shape[1] != n:
            raise ValueError(f"A_{i} has {Ai.shape[1]} columns, A_1 has {n}")
        if Bi.shape != (dy, dims[i]):
            raise ValueError(f"B_{i} has shape {Bi.shape}, expected (d_y, d_{i}) = {(dy, dims[i])}")
    return _assemble(dims, A[:L], B[1:])


def chain_factors(A, B, dims) -> NTKFactors:
    """Θ's factors from chain lists as the kernels return them (A_1..A_{L+1}, B_0..B_L), unchecked.

    For the training driver, which records Θ(t) as it goes: a non-finite
    chain gives non-finite factors rather than an error in mid-run.
    """
    return _assemble(list(dims), A[:len(dims) - 1], B[1:])


def infinite(X, depth, dy) -> NTKFactors:
    """Θ_∞ = (L/d_y) XᵀX ⊗ I_{d_y}, the infinite-width NTK, as one term.

    Its eigenvalues are L σ_j(X)²/d_y, each d_y times. The factors have
    K = 1 term: c = (L/d_y,), G = (XᵀX,), H = (I,).
    """
    depth = check_positive_int(depth, "depth")
    dy = check_positive_int(dy, "dy")
    X = np.asarray(_check_data(X, "X"), dtype=np.float64)
    return NTKFactors(np.array([depth / dy]), (X.T @ X)[None], np.eye(dy)[None])


def check_factors(f) -> NTKFactors:
    """``f`` if it is a valid :class:`NTKFactors` (shapes, finiteness), else a TypeError/ValueError."""
    if not isinstance(f, tuple) or len(f) != 3:
        raise TypeError(f"expected NTKFactors (c, G, H), got {type(f).__name__}")
    c, G, H = (np.asarray(x) for x in f)
    if c.ndim != 1 or len(c) < 1:
        raise ValueError(f"c must be a non-empty 1-D array, got shape {c.shape}")
    K = len(c)
    if G.ndim != 3 or G.shape[0] != K or G.shape[1] != G.shape[2]:
        raise ValueError(f"G must have shape (K, n, n) with K = len(c) = {K}, got {G.shape}")
    if H.ndim != 3 or H.shape[0] != K or H.shape[1] != H.shape[2]:
        raise ValueError(f"H must have shape (K, d_y, d_y) with K = len(c) = {K}, got {H.shape}")
    if G.shape[1] < 1 or H.shape[1] < 1:
        raise ValueError(f"empty factors: G {G.shape}, H {H.shape}")
    for name, x in (("c", c), ("G", G), ("H", H)):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return NTKFactors(np.asarray(c, np.float64), np.asarray(G, np.float64), np.asarray(H, np.float64))


def _check_pair(a, b):
    a, b = check_factors(a), check_factors(b)
    if (a.n, a.dy) != (b.n, b.dy):
        raise ValueError(f"mismatched factors: (n, d_y) = {(a.n, a.dy)} and {(b.n, b.dy)}")
    return a, b


# -- the Gram matrix and its action -----------------------------------------------------


def gram(f) -> np.ndarray:
    """The dense Θ = Σ_i c_i G_i ⊗ H_i, float64, shape (n·d_y, n·d_y), index j·d_y + k."""
    f = check_factors(f)
    if f.rows > GRAM_MAX_ROWS:
        raise ValueError(f"Θ would have {f.rows} rows (> {GRAM_MAX_ROWS}); use eigs, distance or "
                         f"apply, which work on the factors")
    T = np.einsum("i,iab,icd->acbd", f.c, f.G, f.H, optimize=True)
    return T.reshape(f.rows, f.rows)


def apply(f, v) -> np.ndarray:
    """Θ v without forming Θ: vec(Σ_i c_i G_i M H_i), M = v reshaped to (n, d_y).

    ``v`` has length n·d_y (or shape (n·d_y, k) for k vectors at once).
    """
    f = check_factors(f)
    return _apply(f, np.asarray(v, dtype=np.float64))


def _apply(f: NTKFactors, v: np.ndarray) -> np.ndarray:
    if v.shape[0] != f.rows or v.ndim > 2:
        raise ValueError(f"v must have n*d_y = {f.rows} rows, got shape {v.shape}")
    k = 1 if v.ndim == 1 else v.shape[1]
    # (n, d_y, k): M[j, k] per vector; G_i acts on samples, H_i on outputs:
    # (Θ v)[(a, d)] = Σ_i c_i Σ_bc G_i[a, b] H_i[d, c] M[b, c] = (G_i M H_iᵀ)[a, d].
    M = v.reshape(f.n, f.dy, k)
    out = np.einsum("i,iab,bck,idc->adk", f.c, f.G, M, f.H, optimize=True)
    return out.reshape(v.shape)


# -- spectrum ---------------------------------------------------------------------------


def eigs(f, method: str = "auto") -> tuple[float, float]:
    """(λ_min(Θ), λ_max(Θ)).

    ``method="dense"`` forms Θ and takes all its eigenvalues (LAPACK);
    ``"matrix-free"`` runs Lanczos (SciPy's ARPACK ``eigsh``) on the product
    of :func:`apply`: λ_max directly, λ_min as λ_max − λ_max(λ_max I − Θ), so
    that both are accurate to about 1e-10·λ_max, or 1e-6·λ_max where the end
    of the spectrum is a tight cluster (``EIGS_TOLS``): a small λ_min of a
    nearly singular Θ is only accurate in absolute terms;
    ``"auto"`` is dense up to ``DENSE_MAX_ROWS`` rows.
    """
    f = check_factors(f)
    if method not in ("auto", "dense", "matrix-free"):
        raise ValueError(f"unknown method {method!r}; choose 'auto', 'dense' or 'matrix-free'")
    if method == "dense" or (method == "auto" and f.rows <= DENSE_MAX_ROWS) or f.rows < 3:
        w = np.linalg.eigvalsh(gram(f))
        return float(w[0]), float(w[-1])
    return _eigs_matrix_free(f)


def _eigs_matrix_free(f: NTKFactors) -> tuple[float, float]:
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    N = f.rows
    # A fixed start vector: the same factors always give the same numbers.
    v0 = np.random.default_rng(0).standard_normal(N)
    ncv = min(N - 1, 64)
    theta = LinearOperator((N, N), matvec=lambda v: _apply(f, v), dtype=np.float64)

    def top(op):
        # ARPACK stops on the residual of the Ritz vector; when the end of the
        # spectrum is a tight cluster (deep narrow Gaussian nets: many tiny
        # eigenvalues) that residual stalls at the cluster's width while the
        # Ritz value is already as good, so a looser tolerance is tried next.
        for tol in EIGS_TOLS:
            try:
                return float(eigsh(op, k=1, which="LA", v0=v0, ncv=ncv, tol=tol,
                                   return_eigenvectors=False)[0])
            except ArpackNoConvergence:
                continue
        raise RuntimeError(f"matrix-free eigs did not converge on a Θ of {N} rows "
                           f"(ARPACK, tolerances {EIGS_TOLS})")

    lam_max = top(theta)
    gap = top(LinearOperator((N, N), matvec=lambda v: lam_max * v - _apply(f, v), dtype=np.float64))
    return lam_max - gap, lam_max


def eig_bounds(f) -> tuple[float, float]:
    """Cheap bounds (lower ≤ λ_min(Θ), upper ≥ λ_max(Θ)) from n × n and d_y × d_y spectra.

    Since G_i ⪰ 0, λ_min(H_i) I ⪯ H_i ⪯ λ_max(H_i) I gives
    (Σ_i c_i λ_min(H_i) G_i) ⊗ I ⪯ Θ ⪯ (Σ_i c_i λ_max(H_i) G_i) ⊗ I, so
    λ_min(Θ) ≥ λ_min(Σ_i c_i λ_min(H_i) G_i) and
    λ_max(Θ) ≤ λ_max(Σ_i c_i λ_max(H_i) G_i). The lower bound is clipped at 0
    (Θ is positive semi-definite).
    """
    f = check_factors(f)
    h = np.linalg.eigvalsh(f.H)  # (K, d_y), ascending
    low = np.einsum("i,i,iab->ab", f.c, h[:, 0], f.G)
    high = np.einsum("i,i,iab->ab", f.c, h[:, -1], f.G)
    return max(0.0, float(np.linalg.eigvalsh(low)[0])), float(np.linalg.eigvalsh(high)[-1])


# -- norms and distances ----------------------------------------------------------------


def inner(a, b) -> float:
    """⟨Θ_a, Θ_b⟩_F = Σ_ij c_i^a c_j^b ⟨G_i^a, G_j^b⟩_F ⟨H_i^a, H_j^b⟩_F (= tr(G_i G_j) tr(H_i H_j))."""
    a, b = _check_pair(a, b)
    return _inner(a, b)


def _inner(a: NTKFactors, b: NTKFactors) -> float:
    TG = a.G.reshape(len(a.c), -1) @ b.G.reshape(len(b.c), -1).T
    TH = a.H.reshape(len(a.c), -1) @ b.H.reshape(len(b.c), -1).T
    return float(a.c @ (TG * TH) @ b.c)


def norm(f) -> float:
    """‖Θ‖_F from the factors."""
    f = check_factors(f)
    return math.sqrt(max(0.0, _inner(f, f)))


def distance(a, b) -> float:
    """‖Θ_a − Θ_b‖_F / ‖Θ_b‖_F, never forming Θ.

    ‖Θ_b‖_F² is the sum of the non-negative traces of :func:`inner`. The
    difference is not taken as ⟨a,a⟩ − 2⟨a,b⟩ + ⟨b,b⟩: that cancels, and
    rounding leaves a floor of about sqrt(ε) ≈ 1e-8 on the distance (so an
    exact Θ(0) = Θ_∞ would read 1e-8). Instead, rearranged, Θ is the n² × d_y²
    matrix Σ_k c_k vec(G_k) vec(H_k)ᵀ = Uᵀ V with the ±c_k vec(G_k) of both
    sides as rows of U and the vec(H_k) as rows of V; with Householder QRs
    Uᵀ = Q_U R_U and Vᵀ = Q_V R_V, ‖Θ_a − Θ_b‖_F = ‖R_U R_Vᵀ‖_F, accurate to
    about ε relative to ‖Θ_a‖ + ‖Θ_b‖. Cost (K_a + K_b)²(n² + d_y²) flops,
    as the traces.
    """
    a, b = _check_pair(a, b)
    denominator = math.sqrt(max(0.0, _inner(b, b)))
    if denominator == 0:
        raise ValueError("distance to a zero Θ is undefined")
    U = np.concatenate([a.c[:, None] * a.G.reshape(len(a.c), -1),
                        -b.c[:, None] * b.G.reshape(len(b.c), -1)])
    V = np.concatenate([a.H.reshape(len(a.c), -1), b.H.reshape(len(b.c), -1)])
    R_U = np.linalg.qr(U.T, mode="r")
    R_V = np.linalg.qr(V.T, mode="r")
    return float(np.linalg.norm(R_U @ R_V.T)) / denominator


# -- along training -------------------------------------------------------------------


def trajectory(ntk: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, λ_min(Θ(t)), λ_max(Θ(t)), ‖Θ(t) − Θ(0)‖_F/‖Θ(0)‖_F) over the steps of ``ntk`` = {t: NTKFactors}.

    Step 0 must be among them (the distances are to Θ(0)).
    """
    if not isinstance(ntk, dict) or not ntk:
        raise ValueError("no NTK recorded: pass ntk=[0, ...] to fastlin.train")
    if 0 not in ntk:
        raise ValueError(f"the distance to Θ(0) needs step 0 among the recorded steps, got {sorted(ntk)}")
    steps = np.array(sorted(ntk), dtype=np.int64)
    lam = np.array([eigs(ntk[int(t)]) for t in steps], dtype=np.float64).reshape(len(steps), 2)
    dist = np.array([distance(ntk[int(t)], ntk[0]) for t in steps])
    return steps, lam[:, 0], lam[:, 1], dist


# -- a learning rate from the spectrum --------------------------------------------


def auto_lr(weights, X, scale: float = AUTO_LR_SCALE) -> tuple[float, float]:
    """(η, λ_max(Θ(0))) with η = scale / λ_max(Θ(0)) for the raw weights W_1..W_L on data X.

    Near initialization GD on the loss is GD on a quadratic whose Hessian in
    output space is Θ(0): it is stable for η < 2/λ_max. Unlike the Theorem
    4.1 rate, which assumes m >= d_x and an orthogonal init, this follows
    the net actually drawn (a Gaussian net's λ_max(Θ(0)) is heavy-tailed).
    The default ``scale`` (AUTO_LR_SCALE, a quarter of the edge) leaves room
    for λ_max to grow during training, as it does in narrow nets.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
            or not 0 < scale < 2:
        raise ValueError(f"scale must be a number in (0, 2) (2 is the stability edge), got {scale!r}")
    lam_max = eigs(factors(weights, X))[1]
    if not math.isfinite(lam_max) or lam_max <= 0:
        raise ValueError(f"λ_max(Θ(0)) = {lam_max}: no learning rate follows from it (zero or non-finite net)")
    return scale / lam_max, lam_max
