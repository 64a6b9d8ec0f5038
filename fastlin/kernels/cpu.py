"""Numba CPU backend: the one-pass fused GD step (DESIGN.md), on one thread or all.

Each GD step is ONE sweep over the weights, alternating direction:

* upward pass (layers 1..L), given the cached suffix chains B_i(t) and E(t):
  V_i(t+1) = V_i(t) - eta_i B_i(t)^T E(t) A_i(t)^T, while the old prefix chain
  A_{i+1}(t) = V_i(t) A_i(t) and the new one A'_{i+1}(t+1) = V_i(t+1) A'_i(t+1)
  are carried up; A'(t+1) is cached and A'_{L+1}(t+1) = f(t+1) gives E(t+1).
  The gradient needs the old chain only as E A_i^T when d_y <= n, so that is
  what is carried, on d_y rows instead of n: E A_{i+1}^T = (E A_i^T) V_i(t)^T.
* downward pass (layers L..1), symmetric: B_{i-1}(t+1) = B_i V_i(t+1) (old)
  and B'_{i-1}(t+2) = B'_i V_i(t+2) (new, cached); B'_1 Z(t+2) = f(t+2)
  (Z = V_1 X, see "The first layer" below).

Each tile of a few rows is handled while it sits in L1 (L2 for the widest
layers): the old chain through the old rows, the gradient step
eta_i B_i^T E A_i^T = C^T M (rank r = min(n, d_y), never formed as a
matrix) on those rows, two rows' column strips at a time held in registers
over five terms, then the new chain through the new rows (going down, the
chains accumulate over the row blocks, five chains' column strips at a time
held in registers; the strips are explicit vectors: simd.py). So each
weight is read from memory once and written once per step; where a layer is
too big for the caches, the next tile is prefetched while the current one is
worked on from L1 (hints.py).

Going down, a layer whose rows are short (COLUMNS_MAX_ROW_BYTES: m <= 256
in float64) is swept in column strips instead (``down_cols``): a strip of
one cache line of columns over all rows (blocks of STRIP_ROWS), the chains'
strips in registers throughout, its old chain, update and new chain in turn.
Each column's chains then come out whole, and the factor M = E A^T is
needed for the strip's columns only. Rows of 2 KiB are stored one cache
line longer (PAD_ROW_BYTES), so that a strip's lines spread over all cache
sets instead of two.

Threads: a net wide enough (THREADS_MIN_WEIGHTS) is split into one range
per thread in every layer: of rows going up, and going down of columns
(layers swept in strips) or of rows (the others). A chunk of steps then runs
either in ONE parallel region (``run_chunk_parallel``), each thread sweeping
its range of every layer in both passes and waiting for the others at a
barrier between layers (sync.py, 0.04-0.35 us, where opening a region per
layer costs ~2 us), or on one thread sweeping all ranges (``run_chunk``);
threads.py picks by timing. A downward layer split by rows gives partial
chains: each thread sums its range's terms into its own buffer and, after
the barrier, adds up the buffers for its share of the columns; one thread
adds range after range into B in the same order. Every row or column has
the same arithmetic whichever thread sweeps it, so both choices give the
same bits. Narrower nets: one range, one thread.

The first layer: V_1 (d_1 x d_x) enters the loss only through Z = V_1 X
(d_1 x n), and its gradient steps eta_1 B_1^T E X^T lie in the row space of
X^T, so Z(t+1) = Z(t) - M(t) G with M = eta_1 B_1^T E and G = X^T X (n x n).
The kernel steps Z and accumulates S = sum_t M(t); V_1 itself is read only by
``weights`` (V_1(0) - S X^T). For the paper's data (d_x = 1024, n = 16) that
removes the largest layer of a narrow net from every step: at m = 32 it holds
half of all weights. The result is the same GD trajectory; only the rounding
differs (tested against the reference like every other layer).

Layout: all V_i in one flat buffer (layer k at ``voff[k]``, d_{k+1} rows
of ``row_stride(d_k)`` elements, the first d_k of them the row; rows of
2 KiB get one unused cache line more, PAD_ROW_BYTES), and every buffer the
sweeps load strips from starting on a cache line (``line_aligned``); chains stored
transposed with both halves in one block per level j = 0..L: ``A2`` level
j is (2n, d_j) (rows 0..r-1 the old chain's "old rows", E A^T if d_y <= n
(r = d_y) else A (r = n), valid during an upward pass only; rows n..2n-1
the new A'), ``B2`` level j is (2 d_y, d_j) (rows 0..dy-1 old B, dy..2dy-1
new B').
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np
from numba import prange

from . import COMPLETED, CONVERGED, DIVERGED
from .hints import prefetch
from .options import parallel, serial
from .reference import half_squared_norm, prefix_chain, suffix_chain
from .simd import LINE_BYTES, load, madd, splat, store
from .sync import FLAG_STRIDE, JOIN_POLLS, barrier, join
from .threads import chooser

# A net whose widest swept layer (2..L) has at least THREADS_MIN_WEIGHTS
# weights is split into one range (of rows or columns) per thread, and each
# chunk of steps runs either on all threads (one parallel region per chunk,
# each thread sweeping its range of every layer, barriers between layers:
# sync.py) or on one thread sweeping all ranges, whichever measures faster
# for that net shape (threads.py; all threads until both are measured); the
# results are the same. Below it, splitting costs one thread more (8-14% at m = 32) than
# all threads gain on this VM when its cores are far apart. Measured with
# bench/threshold.py (see bench/README.md).
THREADS_MIN_WEIGHTS = 1 << 12
# A thread's rows of an upward layer are swept in one go below this many
# weights (they stay in L1/L2), tile by tile above.
WHOLE_MAX_WEIGHTS = 1 << 13
# Rows per tile of the upward pass.
ROW_TILE = 4
# The row ranges of the threads start at multiples of RANGE_UNIT rows: of
# ROW_TILE, and of every dtype's column strip (simd.Vec, 16 float32), because
# a range's rows are the columns of some small products (``add_product``
# runs whole strips from a block's first column, plain loops after them).
# Then every row and column has the same arithmetic whether one thread sweeps
# all ranges or each thread its own.
RANGE_UNIT = LINE_BYTES // 4
# A block of the downward pass (its chains' strips stay in registers over its
# rows) has as many rows as fill DOWN_BYTES, and at least DOWN_ROWS: a
# strip's rows lie d_in apart, and from 4 KiB apart on they share one L1 set,
# of which an L1 has 8 ways (measured: bench/README.md).
DOWN_BYTES = 1 << 14
DOWN_ROWS = 8
# A downward layer whose rows are at most COLUMNS_MAX_ROW_BYTES long is split
# among threads by columns and swept in column strips (``down_cols``), a
# longer one by rows, in blocks of whole rows (``down_rows``): a strip reads
# one line of every row, and rows 4 KiB or more apart share one L1 set and
# few L2 sets (measured: bench/README.md). A strip is swept in blocks of
# STRIP_ROWS rows.
COLUMNS_MAX_ROW_BYTES = 2048
STRIP_ROWS = 256
# A layer swept by columns whose rows are a multiple of PAD_ROW_BYTES long
# (with COLUMNS_MAX_ROW_BYTES: rows of exactly 2 KiB, m = 256 in float64,
# 512 in float32) is stored with one unused cache line after each row.
# Unpadded, the lines of one column strip lie 32 lines apart and fall into
# 2 of an L1's 64 sets and 32 of an L2's 1024 sets (8 ways each), so a
# strip's 256-row block fills its L2 sets exactly and the prefetched next
# block evicts it; 33 lines per row spread the strip over all sets. Layers
# split by rows are not padded: their blocks are whole rows, and padding
# them made L16 m1024 steps 0.92-0.96x as fast (measured: bench/README.md).
PAD_ROW_BYTES = 2048

# Tile kernels (plain loops over 2-D views, or explicit vectors: simd.py),
# shared by serial and parallel sweeps.


@serial
def row_stride(din, itemsize):
    """Elements from one stored row of a (., din) layer to the next: din, plus a cache line where PAD_ROW_BYTES says."""
    if by_columns(din, itemsize) and din * itemsize % PAD_ROW_BYTES == 0:
        return din + LINE_BYTES // itemsize
    return din


@serial
def chain_rows(Vk, A_in, A_out, r0, r1, ahead, a0, a1):
    """A_out[s, r] = sum_c Vk[r, c] A_in[s, c] for rows r in [r0, r1), all s.

    Register tile of 4 rows x 2 chain columns; the inner loop over c is a
    vectorized dot product. Meanwhile the elements [a0, a1) of the flat
    array ``ahead`` (the next tile, or none) are prefetched, a share before
    each register tile (hints.py). Vk may have more columns than A_in
    (padding, ``row_stride``); only the first A_in.shape[1] are read.
    """
    din = A_in.shape[1]
    S = A_in.shape[0]
    line = LINE_BYTES // Vk.itemsize
    tiles = max((r1 - r0) // 4 * (S // 2), 1)
    share = max(((a1 - a0 + tiles - 1) // tiles + line - 1) // line * line, line)
    q = a0
    r = r0
    while r + 4 <= r1:
        for s in range(0, S - 1, 2):
            qe = min(q + share, a1)
            while q < qe:
                prefetch(ahead, q)
                q += line
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
def add_rows(out, C, M, K, alpha, r0, r1, c0, c1):
    """``add_product`` in plain loops (LLVM vectorizes them), for the rows and columns its strips leave.

    Two rows at a time, so that each load of M serves two rows, and up to
    five terms per pass over them. Loops run over 1-D row views indexed from
    0: numba then emits no negative-index wraparound test.
    """
    width = c1 - c0
    if width <= 0 or r1 <= r0:
        return
    alpha = out.dtype.type(alpha)  # no float64 arithmetic in a float32 sweep
    r = r0
    while r + 2 <= r1:
        v = out[r][c0:c1]
        w = out[r + 1][c0:c1]
        k = 0
        while k + 5 <= K:
            l0, l1, l2, l3, l4 = (alpha * C[k, r], alpha * C[k + 1, r], alpha * C[k + 2, r],
                                  alpha * C[k + 3, r], alpha * C[k + 4, r])
            h0, h1, h2, h3, h4 = (alpha * C[k, r + 1], alpha * C[k + 1, r + 1], alpha * C[k + 2, r + 1],
                                  alpha * C[k + 3, r + 1], alpha * C[k + 4, r + 1])
            g0, g1, g2, g3, g4 = M[k][c0:c1], M[k + 1][c0:c1], M[k + 2][c0:c1], M[k + 3][c0:c1], M[k + 4][c0:c1]
            for c in range(width):
                x0, x1, x2, x3, x4 = g0[c], g1[c], g2[c], g3[c], g4[c]
                v[c] += (l0 * x0 + l1 * x1) + (l2 * x2 + l3 * x3) + l4 * x4
                w[c] += (h0 * x0 + h1 * x1) + (h2 * x2 + h3 * x3) + h4 * x4
            k += 5
        while k + 2 <= K:
            l0, l1 = alpha * C[k, r], alpha * C[k + 1, r]
            h0, h1 = alpha * C[k, r + 1], alpha * C[k + 1, r + 1]
            g0, g1 = M[k][c0:c1], M[k + 1][c0:c1]
            for c in range(width):
                x0, x1 = g0[c], g1[c]
                v[c] += l0 * x0 + l1 * x1
                w[c] += h0 * x0 + h1 * x1
            k += 2
        if k < K:
            l0, h0 = alpha * C[k, r], alpha * C[k, r + 1]
            g0 = M[k][c0:c1]
            for c in range(width):
                v[c] += l0 * g0[c]
                w[c] += h0 * g0[c]
        r += 2
    if r < r1:
        v = out[r][c0:c1]
        for k in range(K):
            l0 = alpha * C[k, r]
            g0 = M[k][c0:c1]
            for c in range(width):
                v[c] += l0 * g0[c]


@serial
def add_product(out, C, M, K, alpha, r0, r1, c0, c1):
    """out[r, c] += alpha sum_{k<K} C[k, r] M[k, c] on the block [r0, r1) x [c0, c1).

    The rank-K update of every step (a layer's gradient step, alpha C^T M)
    and of the small factor products. Two rows at a time, so that each load
    of M serves two rows, and five terms per pass over them, so that the
    paper's rank 10 takes two passes (each pass loads and stores the rows:
    the update is bound by those, not by flops), one column strip (a cache
    line, simd.Vec) at a time: the two rows' sums stay in registers for the
    five terms; the terms left over one at a time. The odd row and the
    columns after the last whole strip go to ``add_rows``.
    """
    W = LINE_BYTES // out.itemsize
    c2 = c0 + (c1 - c0) // W * W
    r2 = r0 + (r1 - r0) // 2 * 2
    K5 = K // 5 * 5
    alpha = out.dtype.type(alpha)  # no float64 arithmetic in a float32 sweep
    for r in range(r0, r2, 2):
        v, w = out[r][c0:c2], out[r + 1][c0:c2]
        for k in range(0, K5, 5):
            l0, l1, l2, l3, l4 = (splat(alpha * C[k, r]), splat(alpha * C[k + 1, r]), splat(alpha * C[k + 2, r]),
                                  splat(alpha * C[k + 3, r]), splat(alpha * C[k + 4, r]))
            h0, h1, h2, h3, h4 = (splat(alpha * C[k, r + 1]), splat(alpha * C[k + 1, r + 1]),
                                  splat(alpha * C[k + 2, r + 1]), splat(alpha * C[k + 3, r + 1]),
                                  splat(alpha * C[k + 4, r + 1]))
            g0, g1, g2, g3, g4 = M[k][c0:c2], M[k + 1][c0:c2], M[k + 2][c0:c2], M[k + 3][c0:c2], M[k + 4][c0:c2]
            for c in range(0, c2 - c0, W):
                x0, x1, x2, x3, x4 = load(g0, c), load(g1, c), load(g2, c), load(g3, c), load(g4, c)
                # Both sums before either store: a store to v may alias M, so
                # storing first would keep all of x live across it (spills).
                a = madd(madd(madd(madd(madd(load(v, c), l0, x0), l1, x1), l2, x2), l3, x3), l4, x4)
                b = madd(madd(madd(madd(madd(load(w, c), h0, x0), h1, x1), h2, x2), h3, x3), h4, x4)
                store(v, c, a)
                store(w, c, b)
        for k in range(K5, K):
            l0, h0, g0 = splat(alpha * C[k, r]), splat(alpha * C[k, r + 1]), M[k][c0:c2]
            for c in range(0, c2 - c0, W):
                x0 = load(g0, c)
                a, b = madd(load(v, c), l0, x0), madd(load(w, c), h0, x0)
                store(v, c, a)
                store(w, c, b)
    add_rows(out, C, M, K, alpha, r2, r1, c0, c2)
    add_rows(out, C, M, K, alpha, r0, r1, c2, c1)


@serial
def set_block(out, C, M, K, alpha, r0, r1, c0, c1):
    """out[r, c] = alpha sum_{k<K} C[k, r] M[k, c] on the block [r0, r1) x [c0, c1)."""
    for r in range(r0, r1):
        o = out[r]
        for c in range(c0, c1):
            o[c] = 0
    add_product(out, C, M, K, alpha, r0, r1, c0, c1)


@serial
def strips5(flat, din, B_in, acc, p, r0, r1, c0, c1, first):
    """acc[p + j, c0:c1] (= or +=) sum_{r in [r0, r1)} B_in[p + j, r] Vk[r, c0:c1] for j < 5 (Vk stored flat).

    One column strip (a cache line, simd.Vec) at a time: the five chains'
    strips stay in registers while the rows of the strip stream past, each
    loaded once for five multiply-adds. c1 - c0 is a multiple of the strip width.
    """
    W = LINE_BYTES // flat.itemsize
    zero = splat(flat.dtype.type(0))
    o0, o1, o2, o3, o4 = acc[p], acc[p + 1], acc[p + 2], acc[p + 3], acc[p + 4]
    b0, b1, b2, b3, b4 = B_in[p], B_in[p + 1], B_in[p + 2], B_in[p + 3], B_in[p + 4]
    for c in range(c0, c1, W):
        if first:
            a0 = a1 = a2 = a3 = a4 = zero
        else:
            a0, a1, a2, a3, a4 = load(o0, c), load(o1, c), load(o2, c), load(o3, c), load(o4, c)
        q = r0 * din + c
        for r in range(r0, r1):
            v = load(flat, q)
            a0 = madd(a0, splat(b0[r]), v)
            a1 = madd(a1, splat(b1[r]), v)
            a2 = madd(a2, splat(b2[r]), v)
            a3 = madd(a3, splat(b3[r]), v)
            a4 = madd(a4, splat(b4[r]), v)
            q += din
        store(o0, c, a0)
        store(o1, c, a1)
        store(o2, c, a2)
        store(o3, c, a3)
        store(o4, c, a4)


@serial
def strips1(flat, din, B_in, acc, p, r0, r1, c0, c1, first):
    """``strips5`` for the one chain p."""
    W = LINE_BYTES // flat.itemsize
    o0, b0 = acc[p], B_in[p]
    for c in range(c0, c1, W):
        a0 = splat(flat.dtype.type(0)) if first else load(o0, c)
        q = r0 * din + c
        for r in range(r0, r1):
            a0 = madd(a0, splat(b0[r]), load(flat, q))
            q += din
        store(o0, c, a0)


@serial
def chain_cols(Vk, B_in, acc, r0, r1, first, c0, c1):
    """acc[p, c0:c1] (= if first, else +=) sum_{r in [r0, r1)} B_in[p, r] Vk[r, c0:c1] for all p.

    Five chains at a time (``strips5``), the rest one by one; the columns
    after the last whole strip from c0 by plain loops (so a column's
    arithmetic does not depend on c0 where c0 is a multiple of the strip).
    """
    P = B_in.shape[0]
    ld = Vk.shape[1]
    flat = Vk.reshape(Vk.size)
    W = LINE_BYTES // Vk.itemsize
    full = c0 + (c1 - c0) // W * W
    p = 0
    while p + 5 <= P:
        strips5(flat, ld, B_in, acc, p, r0, r1, c0, full, first)
        p += 5
    while p < P:
        strips1(flat, ld, B_in, acc, p, r0, r1, c0, full, first)
        p += 1
    for p in range(P):
        o = acc[p][full:c1]
        if first:
            o[:] = 0
        for r in range(r0, r1):
            b = B_in[p, r]
            v = Vk[r][full:c1]
            for c in range(c1 - full):
                o[c] += b * v[c]


@serial
def block_rows(din, itemsize):
    """Rows per block of a downward sweep over a (., din) matrix: DOWN_BYTES of them, at least DOWN_ROWS."""
    return max(DOWN_ROWS, DOWN_BYTES // (din * itemsize))


@serial
def chain_blocks(Vk, B_in, acc, c0, c1):
    """acc[p, c0:c1] = sum_r B_in[p, r] Vk[r, c0:c1] for all p, over all rows of Vk: ``chain_cols``, block by block."""
    rows = block_rows(Vk.shape[1], Vk.itemsize)
    for r in range(0, Vk.shape[0], rows):
        chain_cols(Vk, B_in, acc, r, min(r + rows, Vk.shape[0]), r == 0, c0, c1)


@serial
def strip5(flat, din, B_in, out, p, r0, r1, c, first, ahead, a0, a1):
    """out[p + j, c:c+W] (= or +=) sum_{r in [r0, r1)} B_in[p + j, r] Vk[r, c:c+W], j < 5 (Vk flat; W: a strip).

    The five chains' strips stay in registers over all the rows (one line
    of each); meanwhile the elements a0, a0 + din, ... below a1 of ``ahead``
    (a strip of the next block) are prefetched, one per row. ``strips5`` has
    its own copy of this loop, without the prefetch: with its 8-row blocks,
    calling this function strip by strip made L16 m1024 steps 0.77x as fast
    (``bench/ab.py``, paired median).
    """
    zero = splat(flat.dtype.type(0))
    o0, o1, o2, o3, o4 = out[p], out[p + 1], out[p + 2], out[p + 3], out[p + 4]
    b0, b1, b2, b3, b4 = B_in[p], B_in[p + 1], B_in[p + 2], B_in[p + 3], B_in[p + 4]
    if first:
        s0 = s1 = s2 = s3 = s4 = zero
    else:
        s0, s1, s2, s3, s4 = load(o0, c), load(o1, c), load(o2, c), load(o3, c), load(o4, c)
    q = r0 * din + c
    for r in range(r0, r1):
        if a0 < a1:
            prefetch(ahead, a0)
            a0 += din
        v = load(flat, q)
        s0 = madd(s0, splat(b0[r]), v)
        s1 = madd(s1, splat(b1[r]), v)
        s2 = madd(s2, splat(b2[r]), v)
        s3 = madd(s3, splat(b3[r]), v)
        s4 = madd(s4, splat(b4[r]), v)
        q += din
    store(o0, c, s0)
    store(o1, c, s1)
    store(o2, c, s2)
    store(o3, c, s3)
    store(o4, c, s4)


@serial
def strip1(flat, din, B_in, out, p, r0, r1, c, first, ahead, a0, a1):
    """``strip5`` for the one chain p."""
    o0, b0 = out[p], B_in[p]
    s0 = splat(flat.dtype.type(0)) if first else load(o0, c)
    q = r0 * din + c
    for r in range(r0, r1):
        if a0 < a1:
            prefetch(ahead, a0)
            a0 += din
        s0 = madd(s0, splat(b0[r]), load(flat, q))
        q += din
    store(o0, c, s0)


@serial
def strip_chains(flat, din, B_in, out, p0, p1, r0, r1, c, first, a0, a1):
    """Chains [p0, p1) of a strip (``strip5``, the rest ``strip1``); the prefetch goes with the first call."""
    p = p0
    while p < p1:
        if p + 5 <= p1:
            strip5(flat, din, B_in, out, p, r0, r1, c, first, flat, a0, a1)
            p += 5
        else:
            strip1(flat, din, B_in, out, p, r0, r1, c, first, flat, a0, a1)
            p += 1
        a1 = a0  # prefetched


@serial
def strip_update(flat, din, C, M, K, alpha, r0, r1, c):
    """Vk[r, c:c+W] += sum_{k<K} C[k, r] (alpha M[k, c:c+W]), rows [r0, r1): five scaled M strips in registers.

    alpha scales the M strips once per call, not C[k, r] once per row: a
    scalar multiply per term and row would share the multiply-add ports
    with the update's own multiply-adds (five per ten).
    """
    a = splat(flat.dtype.type(alpha))
    zero = splat(flat.dtype.type(0))
    k = 0
    while k + 5 <= K:
        m0, m1, m2 = madd(zero, a, load(M[k], c)), madd(zero, a, load(M[k + 1], c)), madd(zero, a, load(M[k + 2], c))
        m3, m4 = madd(zero, a, load(M[k + 3], c)), madd(zero, a, load(M[k + 4], c))
        c0, c1, c2, c3, c4 = C[k], C[k + 1], C[k + 2], C[k + 3], C[k + 4]
        q = r0 * din + c
        for r in range(r0, r1):
            v = load(flat, q)
            v = madd(madd(madd(madd(madd(v, splat(c0[r]), m0), splat(c1[r]), m1),
                                splat(c2[r]), m2), splat(c3[r]), m3), splat(c4[r]), m4)
            store(flat, q, v)
            q += din
        k += 5
    while k < K:
        m0, c0 = madd(zero, a, load(M[k], c)), C[k]
        q = r0 * din + c
        for r in range(r0, r1):
            store(flat, q, madd(load(flat, q), splat(c0[r]), m0))
            q += din
        k += 1


@serial
def down_cols(Vk, B_in, out, C, M, K, alpha, c0, c1):
    """Columns [c0, c1) of one downward layer: both chains and the update, strip after strip.

    out[p, c] = sum_r B_in[p, r] Vk[r, c], through the old column for the
    old chain (p < d_y) and, after its update Vk[r, c] += alpha sum_k C[k, r]
    M[k, c], through the new one; all rows, so the chains come out whole.
    A strip (one cache line of columns) is swept in blocks of STRIP_ROWS
    rows, each block's three steps in turn while its lines are in the caches
    (L1 and L2 where the rows are padded, ``row_stride``), the chains' strips
    in registers; the next block is prefetched during its old chain where
    the range is too big to stay in the caches (WHOLE_MAX_WEIGHTS). Each
    column's arithmetic is the same whatever [c0, c1) is, where c0 is a
    multiple of the strip width. Vk may be a padded layer: rows of Vk.shape[1]
    elements, of which only the columns [c0, c1) are touched.
    """
    P = B_in.shape[0]
    dy = P // 2
    dout, ld = Vk.shape
    flat = Vk.reshape(Vk.size)
    W = LINE_BYTES // Vk.itemsize
    full = c0 + (c1 - c0) // W * W
    ahead = (c1 - c0) * dout >= WHOLE_MAX_WEIGHTS
    for c in range(c0, full, W):
        for r in range(0, dout, STRIP_ROWS):
            re = min(r + STRIP_ROWS, dout)
            a0 = a1 = 0
            if ahead and re < dout:
                a0, a1 = re * ld + c, min(re + STRIP_ROWS, dout) * ld + c
            elif ahead and c + W < full:
                a0, a1 = c + W, min(STRIP_ROWS, dout) * ld + c + W
            strip_chains(flat, ld, B_in, out, 0, dy, r, re, c, r == 0, a0, a1)
            strip_update(flat, ld, C, M, K, alpha, r, re, c)
            strip_chains(flat, ld, B_in, out, dy, P, r, re, c, r == 0, 0, 0)
    # The columns after the last whole strip: the same three steps in plain
    # loops, skipped when there are none (their loops over the rows would
    # still run: steps at m = 32 and 64 took 1.1x as long, bench/README.md).
    if full < c1:
        chain_cols(Vk, B_in[:dy], out[:dy], 0, dout, True, full, c1)
        add_product(Vk, C, M, K, alpha, 0, dout, full, c1)
        chain_cols(Vk, B_in[dy:], out[dy:], 0, dout, True, full, c1)


@serial
def prefetch_block(flat, din, r0, r1, c0, c1):
    """Prefetch rows [r0, r1) x columns [c0, c1) of a (., din) matrix stored flat (hints.py)."""
    line = LINE_BYTES // flat.itemsize
    for r in range(r0, r1):
        for q in range(r * din + c0, r * din + c1, line):
            prefetch(flat, q)


@serial
def span(d, t, T):
    """Thread t's share [lo, hi) of range(d) among T: contiguous, in whole units of RANGE_UNIT."""
    units = (d + RANGE_UNIT - 1) // RANGE_UNIT
    return min(units * t // T * RANGE_UNIT, d), min(units * (t + 1) // T * RANGE_UNIT, d)


@serial
def own(d, t, T, R):
    """The rows (or columns) of range(d) that thread t of T sweeps: all of them (T = 1) or range t of R (T = R).

    One thread may take all R ranges in one go wherever the arithmetic of
    each row or column does not depend on where its range starts (ranges
    start at multiples of RANGE_UNIT, so the tile kernels' row groups agree).
    """
    if T == 1:
        return 0, d
    return span(d, t, R)


@serial
def stored_layer(V, voff, dims, k):
    """Layer k (V_{k+1}) as stored: (d_{k+1}, row_stride(d_k)), the row in its first d_k columns."""
    return V[voff[k]:voff[k + 1]].reshape((dims[k + 1], row_stride(dims[k], V.itemsize)))


@serial
def level(buf, off, dims, j, rows):
    """Level j of a chain buffer: (rows, d_j)."""
    return buf[off[j]:off[j + 1]].reshape((rows, dims[j]))


@serial
def up_rows(Vk, A_in, A_out, C, M, K, alpha, r0, r1):
    """Rows [r0, r1) of one upward layer: old chain (its K old rows), update, new chain.

    The update is Vk[r, :] += alpha sum_{k<K} C[k, r] M[k, :]. A range of
    fewer than WHOLE_MAX_WEIGHTS weights is done in one go (it stays in
    L1/L2); a larger one tile by tile, each tile's three steps while it is
    in L1, the next tile prefetched during the new chain.
    """
    n = A_in.shape[0] // 2
    din, ld = A_in.shape[1], Vk.shape[1]
    flat = Vk.reshape(Vk.size)
    step = max(r1 - r0, 1) if (r1 - r0) * din < WHOLE_MAX_WEIGHTS else ROW_TILE
    for r in range(r0, r1, step):
        re = min(r + step, r1)
        chain_rows(Vk, A_in[:K], A_out[:K], r, re, flat, 0, 0)
        add_product(Vk, C, M, K, alpha, r, re, 0, din)
        chain_rows(Vk, A_in[n:], A_out[n:], r, re, flat, re * ld, min(re + step, r1) * ld)


@serial
def down_rows(Vk, B_in, part, acc, C, M, K, alpha, r0, r1, add):
    """Rows [r0, r1) of one downward layer: their terms of both chains and their update.

    part[p, c] = sum_{r in [r0, r1)} B_in[p, r] Vk[r, c], through the old rows
    for the old chain (p < d_y) and, after the update of each block of rows
    (DOWN_BYTES, at least DOWN_ROWS rows; as in ``up_rows``), through the new
    rows for the new chain. The terms accumulate in part itself or, with
    ``add``, in acc ((2 d_y, d_in), the thread's own), which is then added to
    part (part + terms, the order ``sum_parts`` adds partial chains in). After each
    block's old chain the next block is prefetched, where the rows are too
    many to stay in L1/L2 (WHOLE_MAX_WEIGHTS, as in ``up_rows``).
    """
    P = B_in.shape[0]
    dy = P // 2
    din, ld = part.shape[1], Vk.shape[1]
    flat = Vk.reshape(Vk.size)
    ahead = (r1 - r0) * din >= WHOLE_MAX_WEIGHTS
    rows = block_rows(din, Vk.itemsize)
    terms = acc if add else part
    for r in range(r0, r1, rows):
        re = min(r + rows, r1)
        chain_cols(Vk, B_in[:dy], terms[:dy], r, re, r == r0, 0, din)
        if ahead and re < r1:
            prefetch_block(flat, ld, re, min(re + rows, r1), 0, din)
        add_product(Vk, C, M, K, alpha, r, re, 0, din)
        chain_cols(Vk, B_in[dy:], terms[dy:], r, re, r == r0, 0, din)
    if add:
        if r1 > r0:
            for p in range(P):
                part[p] += acc[p]
    elif r1 == r0:
        part[:] = 0


@serial
def sum_parts(parts, R, out, c0, c1):
    """out[p, c] = sum over the row ranges u < R of their partial chains, for columns [c0, c1)."""
    P, din = out.shape
    for p in range(P):
        o = out[p]
        first = parts[0][p * din:(p + 1) * din]
        for c in range(c0, c1):
            o[c] = first[c]
        for u in range(1, R):
            other = parts[u][p * din:(p + 1) * din]
            for c in range(c0, c1):
                o[c] += other[c]


@serial
def small_product_t(Pm, Qm, out, rows, cols, k0, k1):
    """out[i, j] = sum_{k0 <= k < k1} Pm[i, k] Qm[j, k] for i < rows, j < cols.

    Two by two dot products per pass over k: each loaded element serves two.
    """
    i = 0
    while i < rows:
        i2 = min(i + 1, rows - 1)
        p0, p1 = Pm[i][k0:k1], Pm[i2][k0:k1]
        j = 0
        while j < cols:
            j2 = min(j + 1, cols - 1)
            q0, q1 = Qm[j][k0:k1], Qm[j2][k0:k1]
            a00 = a01 = a10 = a11 = out.dtype.type(0)
            for k in range(k1 - k0):
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
def first_layer(Z_T, B1, E, eta0, G, S_T, M_T, c0, c1):
    """The first layer's step on columns [c0, c1) of Z^T (see "The first layer" in the module docstring).

    M = eta_1 B_1^T E (written transposed, (n, d_1)); S += M; Z <- Z - M G,
    with G = X^T X. Costs O(d_1 n (d_y + n)) instead of O(d_1 d_x (n + r)).
    """
    dy, n = E.shape
    set_block(M_T, E, B1, dy, eta0, 0, n, c0, c1)
    for s in range(n):
        acc = S_T[s]
        ms = M_T[s]
        for r in range(c0, c1):
            acc[r] += ms[r]
    add_product(Z_T, G, M_T, n, -1.0, 0, n, c0, c1)


@serial
def up_pass(t, T, R, flags, epoch, net, data, E, ET, Cf, S_T, M_T):
    """Thread t of T: step t -> t+1 going up; returns (loss(t+1), epoch).

    Every layer is split into R row ranges (``span``); thread t sweeps range
    t (T = R) or one thread all of them (T = 1, ``own``), with the same
    arithmetic, so the result is the same either way.

    The gradient step of layer k is eta_k B^T E A^T = alpha C^T M with rank
    r = min(n, d_y). d_y <= n: C = B (cached), M = E A^T, alpha = -eta_k;
    d_y > n: C = eta_k E^T B on the thread's own rows, M = A^T, alpha = -1.
    Either way M is what the old chain carries up (its r "old rows" of each
    level, see the module docstring): E A_{k+1}^T = (E A_k^T) V_k^T is the
    same product as A_{k+1} = V_k A_k, on d_y rows instead of n, so the
    factor is never formed from A.
    """
    V, voff, dims, A2, aoff, B2, boff = net
    Y, G, eta = data
    dy, n = E.shape
    L = dims.size - 1
    # Level 1 holds Z(t)^T in its new half: its old rows (E Z^T or Z^T) from it, then step it.
    Z2 = level(A2, aoff, dims, 1, 2 * n)
    c0, c1 = own(dims[1], t, T, R)
    if dy <= n:
        set_block(Z2, ET, Z2[n:], n, 1.0, 0, dy, c0, c1)
    else:
        for s in range(n):
            Z2[s][c0:c1] = Z2[n + s][c0:c1]
    first_layer(Z2[n:], level(B2, boff, dims, 1, 2 * dy)[dy:], E, eta[0], G, S_T, M_T, c0, c1)
    epoch = barrier(flags, t, T, epoch)
    for k in range(1, L):
        dout = dims[k + 1]
        Vk = stored_layer(V, voff, dims, k)
        A_in = level(A2, aoff, dims, k, 2 * n)
        A_out = level(A2, aoff, dims, k + 1, 2 * n)
        B_cached = level(B2, boff, dims, k + 1, 2 * dy)[dy:]
        r0, r1 = own(dout, t, T, R)
        if dy <= n:
            up_rows(Vk, A_in, A_out, B_cached, A_in[:dy], dy, -eta[k], r0, r1)
        else:
            set_block(Cf, E, B_cached, dy, eta[k], 0, n, r0, r1)
            up_rows(Vk, A_in, A_out, Cf, A_in[:n], n, -1.0, r0, r1)
        epoch = barrier(flags, t, T, epoch)
    return residual_loss(E, ET, level(A2, aoff, dims, L, 2 * n)[n:], Y), epoch


@serial
def by_columns(din, itemsize):
    """Whether a downward layer of rows ``din`` long is split among threads by columns (``down_cols``), not rows."""
    return din * itemsize <= COLUMNS_MAX_ROW_BYTES


@serial
def down_pass(t, T, R, flags, epoch, net, data, E, ET, Cf, Mf, S_T, M_T, parts, blk, fparts, f_T):
    """Thread t of T: step t+1 -> t+2 going down; returns (loss(t+2), epoch).

    A layer whose rows are at most COLUMNS_MAX_ROW_BYTES long is split among
    the threads by columns: thread t sweeps all rows of its range of columns
    (``own``, as going up with rows) in strips (``down_cols``), so its
    columns of both chains come out whole, and it forms the factor M for its
    columns only. A longer layer is split by rows: thread u sweeps row range
    u into its own partial chains (``parts[k % 2, u]``); after a barrier each
    thread sums the partials for the columns that are its rows of the next
    layer down (``sum_parts``), and the two sets of partials alternate so
    that no second barrier is needed before they are written again. One
    thread (T = 1) sweeps all columns, or adds range after range straight
    into B in the order ``sum_parts`` adds them: the same bits either way.
    The gradient factors are those of ``up_pass`` with the roles swapped:
    d_y <= n: C = B (old), M = E A^T (cached A); d_y > n: C = eta E^T B,
    M = A^T.
    """
    V, voff, dims, A2, aoff, B2, boff = net
    Y, G, eta = data
    dy, n = E.shape
    L = dims.size - 1
    P = 2 * dy
    if L == 1:  # f = Z: every thread must have read it for the loss before any steps it
        epoch = barrier(flags, t, T, epoch)
    for k in range(L - 1, 0, -1):
        din, dout = dims[k], dims[k + 1]
        Vk = stored_layer(V, voff, dims, k)
        B_in = level(B2, boff, dims, k + 1, P)
        B_out = level(B2, boff, dims, k, P)
        A_cached = level(A2, aoff, dims, k, 2 * n)[n:]
        if by_columns(din, Vk.itemsize):
            c0, c1 = own(din, t, T, R)
            if dy <= n:
                chain_blocks(A_cached, E, Mf, c0, c1)  # M = E A^T on this thread's columns
                down_cols(Vk, B_in, B_out, B_in[:dy], Mf, dy, -eta[k], c0, c1)
            else:
                set_block(Cf, E, B_in[:dy], dy, eta[k], 0, n, 0, dout)  # C on all rows
                down_cols(Vk, B_in, B_out, Cf, A_cached, n, -1.0, c0, c1)
            epoch = barrier(flags, t, T, epoch)  # the next layer reads all of B_out
            continue
        acc = blk[:P * din].reshape((P, din))
        if dy <= n:
            chain_blocks(A_cached, E, Mf, 0, din)  # M = E A^T: a downward chain through A^T's n rows
        for u in range(t, R, T):
            r0, r1 = span(dout, u, R)
            # One thread adds range after range straight into B, as sum_parts would.
            part = B_out if T == 1 else parts[k % 2, u][:P * din].reshape((P, din))
            add = T == 1 and u > 0
            if dy <= n:
                down_rows(Vk, B_in, part, acc, B_in[:dy], Mf, dy, -eta[k], r0, r1, add)
            else:
                set_block(Cf, E, B_in[:dy], dy, eta[k], 0, n, r0, r1)
                down_rows(Vk, B_in, part, acc, Cf, A_cached, n, -1.0, r0, r1, add)
        if T > 1:
            epoch = barrier(flags, t, T, epoch)
            c0, c1 = span(din, t, T)
            sum_parts(parts[k % 2], R, B_out, c0, c1)
            if k > 1 and by_columns(dims[k - 1], Vk.itemsize):
                epoch = barrier(flags, t, T, epoch)  # a layer split by columns reads all of B_out
    # The first layer steps Z(t+1) -> Z(t+2) in place on this thread's
    # columns of B_1 (the ones it has just swept or summed); f(t+2)^T =
    # Z^T B'_1^T, summed over ranges.
    Z_T = level(A2, aoff, dims, 1, 2 * n)[n:]
    B1 = level(B2, boff, dims, 1, P)
    c0, c1 = own(dims[1], t, T, R)
    first_layer(Z_T, B1[:dy], E, eta[0], G, S_T, M_T, c0, c1)
    for u in range(t, R, T):  # f sums over the ranges one by one, in any case
        c0, c1 = span(dims[1], u, R)
        small_product_t(Z_T, B1[dy:], fparts[u], n, dy, c0, c1)
    epoch = barrier(flags, t, T, epoch)
    f_T[:] = fparts[0]
    for u in range(1, R):
        f_T += fparts[u]
    return residual_loss(E, ET, f_T, Y), epoch


@serial
def run_thread(t, T, R, flags, net, data, bufs, phase, loss_out, loss_stop, result):
    """Thread t of T (R or 1): up to len(loss_out) steps over R row ranges; result = (done, status, phase).

    Every thread computes the same loss from the same f, so all stop together.
    """
    E, ET, Cf, Mf, S_T, M_T, parts, blks, fparts, f_T = bufs
    epoch = 0
    done, status = loss_out.size, COMPLETED
    for i in range(loss_out.size):
        if phase == 0:
            loss, epoch = up_pass(t, T, R, flags, epoch, net, data, E[t], ET[t], Cf[t], S_T, M_T)
        else:
            loss, epoch = down_pass(t, T, R, flags, epoch, net, data, E[t], ET[t], Cf[t], Mf[t], S_T, M_T,
                                    parts, blks[t], fparts, f_T[t])
        phase = 1 - phase
        if t == 0:
            loss_out[i] = loss
        if not math.isfinite(loss):
            done, status = i + 1, DIVERGED
            break
        if loss <= loss_stop:
            done, status = i + 1, CONVERGED
            break
    result[0], result[1], result[2] = done, status, phase


@serial
def run_chunk(flags, net, data, bufs, phase, loss_out, loss_stop, results, R):
    """One thread sweeps all R row ranges (no barriers)."""
    run_thread(0, 1, R, flags, net, data, bufs, phase, loss_out, loss_stop, results[0])


@parallel
def run_chunk_parallel(flags, net, data, bufs, phase, loss_out, loss_stop, results, R):
    """R threads, one per row range, in one parallel region for the whole chunk.

    results[0, 0] = -1 if they did not all run at once (nothing done then).
    """
    for t in prange(R):
        if join(flags, t, R, JOIN_POLLS):
            run_thread(t, R, R, flags, net, data, bufs, phase, loss_out, loss_stop, results[t])
        else:
            results[t, 0] = -1


def line_aligned(shape, dtype, zero=True):
    """A new array (zeros, or uninitialized) whose first element starts a cache line (LINE_BYTES).

    NumPy starts a large buffer 16 bytes into a page, so every row of a
    layer or chain would start 16 bytes into a line, and each one-line
    vector a strip kernel loads (simd.py) would span two lines. Starting
    the buffers on a line (rows of a multiple of LINE_BYTES then all do) made
    one core's downward sweeps 1.2-1.4x as fast at m = 64 and 256
    (bench/README.md). The buffer comes from ``np.empty``, so NumPy still
    advises huge pages for a large one.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = np.empty(size + LINE_BYTES // dtype.itemsize, dtype=dtype)
    start = (-buf.ctypes.data % LINE_BYTES) // dtype.itemsize
    out = buf[start:start + size].reshape(shape)
    if zero:
        out[...] = 0
    return out


class State:
    """Flat buffers of the one-pass kernel and the pass direction of the next step.

    The first layer's weights stay as given in ``V`` (layer 0); the steps
    accumulate its total change as S (``S_T`` = S^T, (n, d_1)), and
    ``weights`` returns V_1 - S X^T.
    """

    def __init__(self, V, X, Y, eta, ranges=None):
        dtype = V[0].dtype
        self.dims = np.array([X.shape[0]] + [Vi.shape[0] for Vi in V], dtype=np.int64)
        n, dy = X.shape[1], Y.shape[0]
        strides = [row_stride(int(d), dtype.itemsize) for d in self.dims[:-1]]
        self.voff = np.concatenate([[0], np.cumsum(self.dims[1:] * strides)]).astype(np.int64)
        self.V = line_aligned(self.voff[-1], dtype, zero=False)
        for k, Vi in enumerate(V):
            self.stored(k)[:, :Vi.shape[1]] = Vi
            self.stored(k)[:, Vi.shape[1]:] = 0
        self.aoff = np.concatenate([[0], np.cumsum(2 * n * self.dims)]).astype(np.int64)
        self.boff = np.concatenate([[0], np.cumsum(2 * dy * self.dims)]).astype(np.int64)
        self.A2 = line_aligned(self.aoff[-1], dtype)
        self.B2 = line_aligned(self.boff[-1], dtype)
        # Y goes into the compiled kernels: an own, writable copy, because a
        # read-only Y (the sweeps' data are read-only) is another Numba type
        # and would compile every kernel a second time.
        self.X, self.Y = X, np.array(Y)
        self.eta = np.asarray(eta, dtype=dtype)
        dmax = int(self.dims.max())
        threads = numba.config.NUMBA_NUM_THREADS
        # Per thread: the factors M = E A^T of a downward layer (d_y <= n) and C = eta E^T B
        # (d_y > n), E and E^T, two sets of partial chains of a downward layer,
        # the downward chains' accumulator, partial and summed outputs f^T.
        # Shared: the first layer's S^T and M^T (columns split among threads).
        self.Mf = line_aligned((threads, dy, dmax), dtype)
        self.S_T = line_aligned((n, self.dims[1]), dtype)
        self.M_T = line_aligned((n, self.dims[1]), dtype)
        self.Es = np.zeros((threads, dy, n), dtype=dtype)
        self.ETs = np.zeros((threads, n, dy), dtype=dtype)
        self.E, self.ET = self.Es[0], self.ETs[0]
        self.Cf = line_aligned((threads, n, dmax), dtype)
        self.parts = line_aligned((2, threads, 2 * dy * dmax), dtype)
        self.blks = line_aligned((threads, 2 * dy * dmax), dtype)
        self.fparts = np.zeros((threads, n, dy), dtype=dtype)
        self.f_Ts = np.zeros((threads, n, dy), dtype=dtype)
        self.G = np.ascontiguousarray(X.T @ X, dtype=dtype)
        self.flags = np.zeros((threads + 2) * FLAG_STRIDE, dtype=np.int64)
        self.results = np.zeros((threads, 3), dtype=np.int64)
        # Row ranges per layer: one per thread for a net that ``splits``,
        # else one. ``mode``: "auto" (timed choice, threads.py), "one" or
        # "all" (forced).
        if ranges is None:
            ranges = numba.get_num_threads() if splits(self.dims) else 1
        self.ranges = max(1, min(int(ranges), threads))
        self.mode = "auto"
        self.chooser = chooser((tuple(self.dims), n, dtype.str), self.ranges)
        self.chunks_run = 0
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

    def stored(self, k):
        """Layer k as stored (``stored_layer``): its rows, then their padding."""
        return self.V[self.voff[k]:self.voff[k + 1]].reshape(self.dims[k + 1], -1)

    def layer(self, k):
        """V_{k+1} as it is now (a view, except for the first layer)."""
        Vk = self.stored(k)[:, :self.dims[k]]
        if k == 0:
            with np.errstate(over="ignore", invalid="ignore"):
                Vk = Vk - self.S_T.T @ self.X.T
        return Vk


def splits(dims) -> bool:
    """Whether a net of widths ``dims`` = [d_0, ..., d_L] is split into one row range per thread.

    It is when its widest swept layer (2..L) has at least THREADS_MIN_WEIGHTS
    weights; then its chunks run on all threads or on one (``run_chunk`` or
    ``run_chunk_parallel``), else on one.
    """
    return any(int(dims[k]) * int(dims[k + 1]) >= THREADS_MIN_WEIGHTS for k in range(1, len(dims) - 1))


def init_state(V, X, Y, eta) -> State:
    return State(V, X, Y, eta)


def chunk_threads(state: State) -> int:
    """Threads for the next chunk: 1 or state.ranges (never more than Numba may use now)."""
    R = state.ranges
    if R == 1 or state.mode == "one" or numba.get_num_threads() < R:
        return 1
    return R if state.mode == "all" else state.chooser.next()


def run_steps(state: State, loss_out, loss_stop: float):
    """Run a chunk of steps on one thread or on ``state.ranges`` threads (``chunk_threads``)."""
    net = (state.V, state.voff, state.dims, state.A2, state.aoff, state.B2, state.boff)
    data = (state.Y, state.G, state.eta)
    bufs = (state.Es, state.ETs, state.Cf, state.Mf, state.S_T, state.M_T, state.parts, state.blks,
            state.fparts, state.f_Ts)
    R = state.ranges
    T = chunk_threads(state)
    state.Es[1:R] = state.E
    state.ETs[1:R] = state.ET
    start = time.perf_counter()
    if T > 1:
        state.flags[:] = 0
        run_chunk_parallel(state.flags, net, data, bufs, state.phase, loss_out, loss_stop,
                           state.results, R)
        if state.results[0, 0] < 0:
            state.mode = "one"  # the threads did not all run at once: one thread from now on
            T = 1
    if T == 1:
        run_chunk(state.flags, net, data, bufs, state.phase, loss_out, loss_stop, state.results, R)
    done, status, state.phase = (int(x) for x in state.results[0])
    # A state's first chunk is not timed: cores that idled while the state
    # was built run the next tens of milliseconds up to 2x slower on this VM
    # (bench/cores.py).
    if R > 1 and done > 0 and state.chunks_run > 0:
        state.chooser.record(T, (time.perf_counter() - start) / done)
    state.chunks_run += 1
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
