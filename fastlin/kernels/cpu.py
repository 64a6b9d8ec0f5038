"""Numba CPU backend: the one-pass fused GD step (DESIGN.md), serial and parallel.

Each GD step is ONE sweep over the weights, alternating direction:

* upward pass (layers 1..L), given the cached suffix chains B_i(t) and E(t):
  V_i(t+1) = V_i(t) - eta_i B_i(t)^T E(t) A_i(t)^T, while the old prefix chain
  A_{i+1}(t) = V_i(t) A_i(t) and the new one A'_{i+1}(t+1) = V_i(t+1) A'_i(t+1)
  are carried up; A'(t+1) is cached and A'_{L+1}(t+1) = f(t+1) gives E(t+1).
* downward pass (layers L..1), symmetric: B_{i-1}(t+1) = B_i V_i(t+1) (old)
  and B'_{i-1}(t+2) = B'_i V_i(t+2) (new, cached); B'_1 Z(t+2) = f(t+2)
  (Z = V_1 X, see "The first layer" below).

Each tile of a few rows is handled while it sits in L1: the old chain
through the old rows, the gradient step eta_i B_i^T E A_i^T = Lf^T Rf
(rank r = min(n, d_y), never formed as a matrix) on those rows, then the new
chain through the new rows (going down, the chains accumulate over the row
tiles of a column block). So each weight is read from memory once and
written once per step. Large layers are split into contiguous row ranges,
one per thread, in both passes; going down, each thread sums its rows' terms
of the chains into its own buffer and the buffers are added after.

The first layer: V_1 (d_1 x d_x) enters the loss only through Z = V_1 X
(d_1 x n), and its gradient steps eta_1 B_1^T E X^T lie in the row space of
X^T, so Z(t+1) = Z(t) - M(t) G with M = eta_1 B_1^T E and G = X^T X (n x n).
The kernel steps Z and accumulates S = sum_t M(t); V_1 itself is read only by
``weights`` (V_1(0) - S X^T). For the paper's data (d_x = 1024, n = 16) that
removes the largest layer of a narrow net from every step: at m = 32 it holds
half of all weights. The result is the same GD trajectory; only the rounding
differs (tested against the reference like every other layer).

Layout: all V_i in one flat buffer (layer k at ``voff[k]``, shape
(d_{k+1}, d_k)); chains stored transposed with both halves in one block per
level j = 0..L: ``A2`` level j is (2n, d_j) (rows 0..n-1 old A, n..2n-1 new
A'), ``B2`` level j is (2 d_y, d_j) (rows 0..dy-1 old B, dy..2dy-1 new B').
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from . import COMPLETED, CONVERGED, DIVERGED
from .options import parallel, serial
from .reference import half_squared_norm, prefix_chain, suffix_chain

# A layer with at least this many weights is swept by all threads (each takes
# a contiguous range of its rows, in both passes); smaller layers run
# serially, since a parallel region costs a few microseconds to open and the
# step opens L of them. Measured with bench/threshold.py (see bench/README.md).
PARALLEL_MIN_WEIGHTS = 1 << 13
# Rows per tile (both passes) and columns per block in the downward pass.
ROW_TILE = 4
COL_BLOCK = 128

# Tile kernels: plain loops over 2-D views, shared by serial and parallel sweeps.


@serial
def chain_rows(Vk, A_in, A_out, r0, r1):
    """A_out[s, r] = sum_c Vk[r, c] A_in[s, c] for rows r in [r0, r1), all s.

    Register tile of 4 rows x 2 chain columns; the inner loop over c is a
    vectorized dot product.
    """
    din = Vk.shape[1]
    S = A_in.shape[0]
    r = r0
    while r + 4 <= r1:
        for s in range(0, S - 1, 2):
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = Vk.dtype.type(0)
            for c in range(din):
                b0 = A_in[s, c]
                b1 = A_in[s + 1, c]
                v0 = Vk[r, c]
                v1 = Vk[r + 1, c]
                v2 = Vk[r + 2, c]
                v3 = Vk[r + 3, c]
                a00 += v0 * b0
                a01 += v0 * b1
                a10 += v1 * b0
                a11 += v1 * b1
                a20 += v2 * b0
                a21 += v2 * b1
                a30 += v3 * b0
                a31 += v3 * b1
            A_out[s, r] = a00
            A_out[s + 1, r] = a01
            A_out[s, r + 1] = a10
            A_out[s + 1, r + 1] = a11
            A_out[s, r + 2] = a20
            A_out[s + 1, r + 2] = a21
            A_out[s, r + 3] = a30
            A_out[s + 1, r + 3] = a31
        if S % 2 == 1:
            for rr in range(r, r + 4):
                acc = Vk.dtype.type(0)
                for c in range(din):
                    acc += Vk[rr, c] * A_in[S - 1, c]
                A_out[S - 1, rr] = acc
        r += 4
    while r < r1:
        for s in range(S):
            acc = Vk.dtype.type(0)
            for c in range(din):
                acc += Vk[r, c] * A_in[s, c]
            A_out[s, r] = acc
        r += 1


@serial
def add_product(out, C, M, K, alpha, r0, r1, c0, c1):
    """out[r, c] += alpha sum_{k<K} C[k, r] M[k, c] on the block [r0, r1) x [c0, c1).

    The rank-K update of every step (the gradient step is alpha = -1, C = Lf,
    M = Rf) and of the small factor products. Two rows and four terms at a
    time so that each load of M serves two rows. Loops run over 1-D row views
    indexed from 0: numba then emits no negative-index wraparound test and
    LLVM vectorizes.
    """
    width = c1 - c0
    alpha = out.dtype.type(alpha)  # no float64 arithmetic in a float32 sweep
    r = r0
    while r + 2 <= r1:
        v = out[r][c0:c1]
        w = out[r + 1][c0:c1]
        k = 0
        while k + 4 <= K:
            l0, l1, l2, l3 = alpha * C[k, r], alpha * C[k + 1, r], alpha * C[k + 2, r], alpha * C[k + 3, r]
            h0, h1, h2, h3 = (alpha * C[k, r + 1], alpha * C[k + 1, r + 1], alpha * C[k + 2, r + 1],
                              alpha * C[k + 3, r + 1])
            g0, g1, g2, g3 = M[k][c0:c1], M[k + 1][c0:c1], M[k + 2][c0:c1], M[k + 3][c0:c1]
            for c in range(width):
                x0, x1, x2, x3 = g0[c], g1[c], g2[c], g3[c]
                v[c] += (l0 * x0 + l1 * x1) + (l2 * x2 + l3 * x3)
                w[c] += (h0 * x0 + h1 * x1) + (h2 * x2 + h3 * x3)
            k += 4
        while k < K:
            l0, h0 = alpha * C[k, r], alpha * C[k, r + 1]
            g0 = M[k][c0:c1]
            for c in range(width):
                v[c] += l0 * g0[c]
                w[c] += h0 * g0[c]
            k += 1
        r += 2
    if r < r1:
        v = out[r][c0:c1]
        for k in range(K):
            l0 = alpha * C[k, r]
            g0 = M[k][c0:c1]
            for c in range(width):
                v[c] += l0 * g0[c]


@serial
def set_product(out, C, M, K, alpha, rows, cols):
    """out[r, c] = alpha sum_{k<K} C[k, r] M[k, c] for r < rows, c < cols."""
    for r in range(rows):
        o = out[r]
        for c in range(cols):
            o[c] = 0
    add_product(out, C, M, K, alpha, 0, rows, 0, cols)


@serial
def chain_cols(Vk, B_in, acc, r0, r1, c0):
    """acc[p, c] += sum_{r in [r0, r1)} B_in[p, r] Vk[r, c0 + c] for all p and c < acc width.

    Four rows of Vk by two chain rows at a time: each load of Vk serves two
    outputs.
    """
    P = B_in.shape[0]
    width = acc.shape[1]
    c1 = c0 + width
    r = r0
    while r + 4 <= r1:
        v0, v1, v2, v3 = Vk[r][c0:c1], Vk[r + 1][c0:c1], Vk[r + 2][c0:c1], Vk[r + 3][c0:c1]
        for p in range(0, P - 1, 2):
            b0, b1, b2, b3 = B_in[p, r], B_in[p, r + 1], B_in[p, r + 2], B_in[p, r + 3]
            d0, d1, d2, d3 = B_in[p + 1, r], B_in[p + 1, r + 1], B_in[p + 1, r + 2], B_in[p + 1, r + 3]
            o0, o1 = acc[p], acc[p + 1]
            for c in range(width):
                x0, x1, x2, x3 = v0[c], v1[c], v2[c], v3[c]
                o0[c] += (b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3)
                o1[c] += (d0 * x0 + d1 * x1) + (d2 * x2 + d3 * x3)
        if P % 2 == 1:
            b0, b1, b2, b3 = B_in[P - 1, r], B_in[P - 1, r + 1], B_in[P - 1, r + 2], B_in[P - 1, r + 3]
            o0 = acc[P - 1]
            for c in range(width):
                o0[c] += (b0 * v0[c] + b1 * v1[c]) + (b2 * v2[c] + b3 * v3[c])
        r += 4
    while r < r1:
        v0 = Vk[r][c0:c1]
        for p in range(P):
            b0 = B_in[p, r]
            out = acc[p]
            for c in range(width):
                out[c] += b0 * v0[c]
        r += 1


@serial
def up_tile(Vk, A_in, A_out, Lf, Rf, rank, r0, r1):
    """Rows [r0, r1) of one upward layer: old chain, update, new chain, while the rows are in L1."""
    n = A_in.shape[0] // 2
    chain_rows(Vk, A_in[:n], A_out[:n], r0, r1)
    add_product(Vk, Lf, Rf, rank, -1.0, r0, r1, 0, Vk.shape[1])
    chain_rows(Vk, A_in[n:], A_out[n:], r0, r1)


@serial
def down_rows(Vk, B_in, part, blk, Lf, Rf, rank, r0, r1):
    """Rows [r0, r1) of one downward layer: their terms of both chains and their update.

    part[p, c] = sum_{r in [r0, r1)} B_in[p, r] Vk[r, c], through the old rows
    for the old chain (p < d_y) and, after the update of each row tile,
    through the new rows for the new chain. Column blocks of COL_BLOCK
    accumulate in the flat buffer blk: rows of part lie d_in apart, and at
    d_in = 1024 (8 KB) the 2 d_y of them would all fall in the same L1 cache
    sets.
    """
    P = B_in.shape[0]
    dy = P // 2
    din = Vk.shape[1]
    for c0 in range(0, din, COL_BLOCK):
        c1 = min(c0 + COL_BLOCK, din)
        acc = blk[:P * (c1 - c0)].reshape((P, c1 - c0))
        acc[:] = 0
        for r in range(r0, r1, ROW_TILE):
            re = min(r + ROW_TILE, r1)
            chain_cols(Vk, B_in[:dy], acc[:dy], r, re, c0)
            add_product(Vk, Lf, Rf, rank, -1.0, r, re, c0, c1)
            chain_cols(Vk, B_in[dy:], acc[dy:], r, re, c0)
        for p in range(P):
            part[p][c0:c1] = acc[p]


@serial
def up_layer_serial(Vk, A_in, A_out, Lf, Rf, rank):
    up_tile(Vk, A_in, A_out, Lf, Rf, rank, 0, Vk.shape[0])


@parallel
def up_layer_parallel(Vk, A_in, A_out, Lf, Rf, rank):
    dout = Vk.shape[0]
    ntiles = (dout + ROW_TILE - 1) // ROW_TILE
    for t in prange(ntiles):
        r0 = t * ROW_TILE
        up_tile(Vk, A_in, A_out, Lf, Rf, rank, r0, min(r0 + ROW_TILE, dout))


@serial
def down_layer_serial(Vk, B_in, B_out, Lf, Rf, rank, blks):
    down_rows(Vk, B_in, B_out, blks, Lf, Rf, rank, 0, Vk.shape[0])


@parallel
def down_layer_parallel(Vk, B_in, B_out, Lf, Rf, rank, parts, blks, threads):
    """Threads take contiguous row ranges; their partial chains are summed after.

    Splitting rows (not columns) lets each thread stream one contiguous part
    of the layer; the price is a sum of T partial chains of 2 d_y x d_in.
    """
    dout, din = Vk.shape
    P = B_in.shape[0]
    tiles = (dout + ROW_TILE - 1) // ROW_TILE
    T = min(threads, tiles)
    for t in prange(T):
        r0 = (tiles * t // T) * ROW_TILE
        r1 = min((tiles * (t + 1) // T) * ROW_TILE, dout)
        part = parts[t * P * din:(t + 1) * P * din].reshape((P, din))
        blk = blks[t * P * COL_BLOCK:(t + 1) * P * COL_BLOCK]
        down_rows(Vk, B_in, part, blk, Lf, Rf, rank, r0, r1)
    for p in range(P):
        out = B_out[p]
        first = parts[p * din:(p + 1) * din]
        for c in range(din):
            out[c] = first[c]
        for t in range(1, T):
            other = parts[(t * P + p) * din:(t * P + p + 1) * din]
            for c in range(din):
                out[c] += other[c]


@serial
def gradient_factors(B, AT, E, ET, eta, Lf, Rf):
    """Write eta B^T E A^T = Lf^T Rf with rank r = min(n, dy); return r.

    B: (dy, d_out) suffix chain, AT: (n, d_in) transposed prefix chain,
    E: (dy, n), ET = E^T. dy <= n: Lf = eta B, Rf = E A^T; else
    Lf = eta E^T B, Rf = A^T.
    """
    dy, n = E.shape
    dout = B.shape[1]
    din = AT.shape[1]
    if dy <= n:
        for q in range(dy):
            lq = Lf[q]
            bq = B[q]
            for r in range(dout):
                lq[r] = eta * bq[r]
        set_product(Rf, ET, AT, n, 1.0, dy, din)
        return dy
    set_product(Lf, E, B, dy, eta, n, dout)
    for s in range(n):
        rs = Rf[s]
        ats = AT[s]
        for c in range(din):
            rs[c] = ats[c]
    return n


@serial
def small_product_t(Pm, Qm, out, rows, cols, inner):
    """out[i, j] = sum_k Pm[i, k] Qm[j, k] for i < rows, j < cols, k < inner.

    Two by two dot products per pass over k: each loaded element serves two.
    """
    i = 0
    while i < rows:
        i2 = min(i + 1, rows - 1)
        p0, p1 = Pm[i][:inner], Pm[i2][:inner]
        j = 0
        while j < cols:
            j2 = min(j + 1, cols - 1)
            q0, q1 = Qm[j][:inner], Qm[j2][:inner]
            a00 = a01 = a10 = a11 = out.dtype.type(0)
            for k in range(inner):
                a00 += p0[k] * q0[k]
                a01 += p0[k] * q1[k]
                a10 += p1[k] * q0[k]
                a11 += p1[k] * q1[k]
            out[i, j] = a00
            out[i, j2] = a01
            out[i2, j] = a10
            out[i2, j2] = a11
            j += 2
        i += 2


@serial
def residual_loss(E, ET, f_T, Y):
    """E = f - Y (and ET = E^T) from the transposed output f_T (n, dy); return 1/2 ||E||^2 in float64."""
    dy, n = E.shape
    loss = 0.0
    for p in range(dy):
        for s in range(n):
            e = f_T[s, p] - Y[p, s]
            E[p, s] = e
            ET[s, p] = e
            loss += np.float64(e) * np.float64(e)
    return 0.5 * loss


@serial
def first_layer(Z_T, B1, E, eta0, G, S_T, M_T):
    """The first layer's step, through Z = V_1 X only (see "The first layer" in the module docstring).

    M = eta_1 B_1^T E (written transposed, (n, d_1)); S += M; Z <- Z - M G,
    with G = X^T X. Costs O(d_1 n (d_y + n)) instead of O(d_1 d_x (n + r)).
    """
    dy, n = E.shape
    d1 = M_T.shape[1]
    set_product(M_T, E, B1, dy, eta0, n, d1)
    for s in range(n):
        acc = S_T[s]
        ms = M_T[s]
        for r in range(d1):
            acc[r] += ms[r]
    add_product(Z_T, G, M_T, n, -1.0, 0, n, 0, d1)


@serial
def up_pass(V, voff, dims, A2, aoff, B2, boff, E, ET, Y, eta, Lf, Rf, G, S_T, M_T, n, dy, min_parallel):
    """Step t -> t+1 going up; returns loss(t+1)."""
    L = dims.size - 1
    # Level 1 holds Z(t)^T in its new half: keep it as the old half, step it.
    Z2 = A2[aoff[1]:aoff[2]].reshape((2 * n, dims[1]))
    Z2[:n] = Z2[n:]
    first_layer(Z2[n:], B2[boff[1]:boff[2]].reshape((2 * dy, dims[1]))[dy:], E, eta[0], G, S_T, M_T)
    for k in range(1, L):
        din, dout = dims[k], dims[k + 1]
        Vk = V[voff[k]:voff[k + 1]].reshape((dout, din))
        A_in = A2[aoff[k]:aoff[k + 1]].reshape((2 * n, din))
        A_out = A2[aoff[k + 1]:aoff[k + 2]].reshape((2 * n, dout))
        B_cached = B2[boff[k + 1]:boff[k + 2]].reshape((2 * dy, dout))[dy:]
        rank = gradient_factors(B_cached, A_in[:n], E, ET, eta[k], Lf, Rf)
        if dout * din >= min_parallel:
            up_layer_parallel(Vk, A_in, A_out, Lf, Rf, rank)
        else:
            up_layer_serial(Vk, A_in, A_out, Lf, Rf, rank)
    return residual_loss(E, ET, A2[aoff[L]:aoff[L + 1]].reshape((2 * n, dy))[n:], Y)


@serial
def down_pass(V, voff, dims, A2, aoff, B2, boff, E, ET, Y, eta, Lf, Rf, G, S_T, M_T, f_T, parts, blks,
              n, dy, min_parallel, threads):
    """Step t+1 -> t+2 going down; returns loss(t+2)."""
    L = dims.size - 1
    for k in range(L - 1, 0, -1):
        din, dout = dims[k], dims[k + 1]
        Vk = V[voff[k]:voff[k + 1]].reshape((dout, din))
        B_in = B2[boff[k + 1]:boff[k + 2]].reshape((2 * dy, dout))
        B_out = B2[boff[k]:boff[k + 1]].reshape((2 * dy, din))
        A_cached = A2[aoff[k]:aoff[k + 1]].reshape((2 * n, din))[n:]
        rank = gradient_factors(B_in[:dy], A_cached, E, ET, eta[k], Lf, Rf)
        if dout * din >= min_parallel:
            down_layer_parallel(Vk, B_in, B_out, Lf, Rf, rank, parts, blks, threads)
        else:
            down_layer_serial(Vk, B_in, B_out, Lf, Rf, rank, blks)
    # The first layer steps Z(t+1) -> Z(t+2) in place; f(t+2)^T = Z^T B'_1^T.
    Z_T = A2[aoff[1]:aoff[2]].reshape((2 * n, dims[1]))[n:]
    B1 = B2[boff[1]:boff[2]].reshape((2 * dy, dims[1]))
    first_layer(Z_T, B1[:dy], E, eta[0], G, S_T, M_T)
    small_product_t(Z_T, B1[dy:], f_T, n, dy, dims[1])
    return residual_loss(E, ET, f_T, Y)


@serial
def run_chunk(V, voff, dims, A2, aoff, B2, boff, E, ET, Y, eta, Lf, Rf, G, S_T, M_T, f_T, parts, blks,
              phase, loss_out, loss_stop, min_parallel, threads):
    """Run up to len(loss_out) steps, alternating passes; returns (done, status, phase)."""
    dy, n = E.shape
    for t in range(loss_out.size):
        if phase == 0:
            loss = up_pass(V, voff, dims, A2, aoff, B2, boff, E, ET, Y, eta, Lf, Rf, G, S_T, M_T, n, dy,
                           min_parallel)
        else:
            loss = down_pass(V, voff, dims, A2, aoff, B2, boff, E, ET, Y, eta, Lf, Rf, G, S_T, M_T, f_T,
                             parts, blks, n, dy, min_parallel, threads)
        phase = 1 - phase
        loss_out[t] = loss
        if not math.isfinite(loss):
            return t + 1, DIVERGED, phase
        if loss <= loss_stop:
            return t + 1, CONVERGED, phase
    return loss_out.size, COMPLETED, phase


class State:
    """Flat buffers of the one-pass kernel and the pass direction of the next step.

    The first layer's weights stay as given in ``V`` (layer 0); the steps
    accumulate its total change as S (``S_T`` = S^T, (n, d_1)), and
    ``weights`` returns V_1 - S X^T.
    """

    def __init__(self, V, X, Y, eta):
        dtype = V[0].dtype
        self.dims = np.array([X.shape[0]] + [Vi.shape[0] for Vi in V], dtype=np.int64)
        n, dy = X.shape[1], Y.shape[0]
        sizes = self.dims[1:] * self.dims[:-1]
        self.voff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.V = np.concatenate([Vi.ravel() for Vi in V]).astype(dtype, copy=False)
        self.aoff = np.concatenate([[0], np.cumsum(2 * n * self.dims)]).astype(np.int64)
        self.boff = np.concatenate([[0], np.cumsum(2 * dy * self.dims)]).astype(np.int64)
        self.A2 = np.zeros(self.aoff[-1], dtype=dtype)
        self.B2 = np.zeros(self.boff[-1], dtype=dtype)
        self.X, self.Y = X, Y
        self.eta = np.asarray(eta, dtype=dtype)
        dmax = int(self.dims.max())
        self.Lf = np.zeros((max(n, dy), dmax), dtype=dtype)
        self.Rf = np.zeros((max(n, dy), dmax), dtype=dtype)
        self.f_T = np.zeros((n, dy), dtype=dtype)
        self.E = np.zeros((dy, n), dtype=dtype)
        self.ET = np.zeros((n, dy), dtype=dtype)
        self.G = np.ascontiguousarray(X.T @ X, dtype=dtype)
        self.S_T = np.zeros((n, self.dims[1]), dtype=dtype)
        self.M_T = np.zeros((n, self.dims[1]), dtype=dtype)
        # Per thread: the partial chains of a parallel downward layer and the
        # column-block accumulator.
        threads = numba.config.NUMBA_NUM_THREADS
        self.parts = np.zeros(threads * 2 * dy * dmax, dtype=dtype)
        self.blks = np.zeros(threads * 2 * dy * COL_BLOCK, dtype=dtype)
        self.min_parallel = PARALLEL_MIN_WEIGHTS
        # Level 0 (X) is read by chains() only; the top of every downward
        # pass is the identity in both halves.
        self.level(self.A2, self.aoff, 0, 2 * n)[:] = np.concatenate([X.T, X.T])
        self.level(self.B2, self.boff, len(V), 2 * dy)[:] = np.concatenate([np.eye(dy)] * 2)
        # Step 0 goes up: it needs Z(0) = V_1 X, the cached suffix chains
        # B_i(0) and E(0).
        with np.errstate(over="ignore", invalid="ignore"):
            A = prefix_chain(V, X)
            self.level(self.A2, self.aoff, 1, 2 * n)[n:] = A[1].T
            for j, Bj in enumerate(suffix_chain(V)):
                self.level(self.B2, self.boff, j, 2 * dy)[dy:] = Bj
            self.E[:] = A[-1] - Y
            self.ET[:] = self.E.T
        self.loss0 = half_squared_norm(self.E)
        self.phase = 0

    def level(self, buf, off, j, rows):
        return buf[off[j]:off[j + 1]].reshape(rows, self.dims[j])

    def layer(self, k):
        """V_{k+1} as it is now (a view, except for the first layer)."""
        Vk = self.V[self.voff[k]:self.voff[k + 1]].reshape(self.dims[k + 1], self.dims[k])
        if k == 0:
            with np.errstate(over="ignore", invalid="ignore"):
                Vk = Vk - self.S_T.T @ self.X.T
        return Vk


def init_state(V, X, Y, eta) -> State:
    return State(V, X, Y, eta)


def run_steps(state: State, loss_out, loss_stop: float):
    done, status, state.phase = run_chunk(
        state.V, state.voff, state.dims, state.A2, state.aoff, state.B2, state.boff, state.E,
        state.ET, state.Y, state.eta, state.Lf, state.Rf, state.G, state.S_T, state.M_T,
        state.f_T, state.parts, state.blks, state.phase, loss_out, loss_stop, state.min_parallel,
        numba.get_num_threads())
    return done, status


def weights(state: State):
    return [state.layer(k).copy() for k in range(len(state.dims) - 1)]


def chains(state: State):
    """Chains at the current step: the cached side is read, the other recomputed."""
    V = [state.layer(k) for k in range(len(state.dims) - 1)]
    n, dy = state.X.shape[1], state.Y.shape[0]
    if state.phase == 1:  # after an upward pass the prefix chains A(t) are cached
        A = [state.level(state.A2, state.aoff, j, 2 * n)[n:].T.copy() for j in range(len(V) + 1)]
        B = suffix_chain(V)
    else:  # after a downward pass B_1..B_L are cached (B_0 = B_1 V_1 is not formed)
        A = prefix_chain(V, state.X)
        B = [state.level(state.B2, state.boff, j, 2 * dy)[dy:].copy() for j in range(len(V) + 1)]
        B[0] = B[1] @ V[0]
    return A, B, state.E.copy()
