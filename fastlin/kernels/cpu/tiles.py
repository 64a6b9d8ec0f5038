"""Register-tile kernels of the CPU step: the upward layer sweep and the rank-r products.

* ``up_chain``: A_out = V A_in on a range of rows, in register tiles of
  4 rows x 2 chain columns (the inner loop a vectorized dot product),
  prefetching the next tile meanwhile.
* ``add_product`` / ``set_block``: out (+)= alpha C^T M on a block, the rank-r
  gradient step of every layer (never formed as a matrix) and the small
  factor products; two rows and five terms per pass, in explicit vectors.
* ``up_layer``: one thread's rows of an upward layer: old chain, update,
  new chain, tile by tile while the tile is in L1.
* ``small_product_t``: out = P Q^T over a range of k (the output f^T).
"""

from ..llvm import load, madd, prefetch, splat, store
from ..options import serial, specialized
from ..tuning import LINE_BYTES, ROW_TILE, WHOLE_MAX_WEIGHTS


@specialized
def up_chain(Vk, A_in, A_out, r0, r1, ahead, a0, a1):
    """A_out[s, r] = sum_c Vk[r, c] A_in[s, c] for rows r in [r0, r1), all s.

    Register tile of 4 rows x 2 chain columns; the inner loop over c is a
    vectorized dot product. Meanwhile the elements [a0, a1) of the flat
    array ``ahead`` (the next tile, or none) are prefetched, a share before
    each register tile (``llvm.prefetch``). Vk may have more columns than A_in
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


@specialized
def _add_product_loops(out, C, M, K, alpha, r0, r1, c0, c1):
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


@specialized
def add_product(out, C, M, K, alpha, r0, r1, c0, c1):
    """out[r, c] += alpha sum_{k<K} C[k, r] M[k, c] on the block [r0, r1) x [c0, c1).

    The rank-K update of every step (a layer's gradient step, alpha C^T M)
    and of the small factor products. Two rows at a time, so that each load
    of M serves two rows, and five terms per pass over them, so that the
    paper's rank 10 takes two passes (each pass loads and stores the rows:
    the update is bound by those, not by flops), one column strip (a cache
    line, llvm.Vec) at a time: the two rows' sums stay in registers for the
    five terms; the terms left over one at a time. The odd row and the
    columns after the last whole strip go to ``_add_product_loops``.
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
    _add_product_loops(out, C, M, K, alpha, r2, r1, c0, c2)
    _add_product_loops(out, C, M, K, alpha, r0, r1, c2, c1)


@specialized
def set_block(out, C, M, K, alpha, r0, r1, c0, c1):
    """out[r, c] = alpha sum_{k<K} C[k, r] M[k, c] on the block [r0, r1) x [c0, c1)."""
    for r in range(r0, r1):
        o = out[r]
        for c in range(c0, c1):
            o[c] = 0
    add_product(out, C, M, K, alpha, r0, r1, c0, c1)


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
def up_layer(Vk, A_in, A_out, C, M, K, alpha, r0, r1):
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
        up_chain(Vk, A_in[:K], A_out[:K], r, re, flat, 0, 0)
        add_product(Vk, C, M, K, alpha, r, re, 0, din)
        up_chain(Vk, A_in[n:], A_out[n:], r, re, flat, re * ld, min(re + step, r1) * ld)
