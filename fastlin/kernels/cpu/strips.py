"""Column-strip kernels of the CPU step: the downward layer sweeps.

A strip is one cache line of columns (``llvm.Vec``). Going down, the chains
B_{i-1} = B_i V_i accumulate over rows, so the kernels keep several chains'
strips in registers while the rows stream past, each row's line loaded once
for five multiply-adds.

* ``down_chain`` / ``down_chain_blocks``: acc = B_in V over a block of rows
  (or all rows, block by block) on a range of columns.
* ``down_layer_cols``: a thread's columns of a layer with short rows
  (``layout.swept_by_columns``): strip after strip over all rows, old chain,
  update and new chain per block of STRIP_ROWS rows, so each column's
  chains come out whole.
* ``down_layer_rows``: a thread's rows of a layer with long rows, in blocks
  of rows (``layout.down_block_rows``): partial chains that the threads sum.
"""

from ..llvm import load, madd, prefetch, splat, store
from ..options import serial, specialized
from ..tuning import LINE_BYTES, STRIP_ROWS, WHOLE_MAX_WEIGHTS
from .layout import down_block_rows
from .tiles import add_product


@specialized
def _five_chains_across_strips(flat, din, B_in, acc, p, r0, r1, c0, c1, first):
    """acc[p + j, c0:c1] (= or +=) sum_{r in [r0, r1)} B_in[p + j, r] Vk[r, c0:c1] for j < 5 (Vk stored flat).

    One column strip (a cache line, llvm.Vec) at a time: the five chains'
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


@specialized
def _one_chain_across_strips(flat, din, B_in, acc, p, r0, r1, c0, c1, first):
    """``_five_chains_across_strips`` for the one chain p."""
    W = LINE_BYTES // flat.itemsize
    o0, b0 = acc[p], B_in[p]
    for c in range(c0, c1, W):
        a0 = splat(flat.dtype.type(0)) if first else load(o0, c)
        q = r0 * din + c
        for r in range(r0, r1):
            a0 = madd(a0, splat(b0[r]), load(flat, q))
            q += din
        store(o0, c, a0)


@specialized
def down_chain(Vk, B_in, acc, r0, r1, first, c0, c1):
    """acc[p, c0:c1] (= if first, else +=) sum_{r in [r0, r1)} B_in[p, r] Vk[r, c0:c1] for all p.

    Five chains at a time (``_five_chains_across_strips``), the rest one by one; the columns
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
        _five_chains_across_strips(flat, ld, B_in, acc, p, r0, r1, c0, full, first)
        p += 5
    while p < P:
        _one_chain_across_strips(flat, ld, B_in, acc, p, r0, r1, c0, full, first)
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
def down_chain_blocks(Vk, B_in, acc, c0, c1):
    """acc[p, c0:c1] = sum_r B_in[p, r] Vk[r, c0:c1] for all p, over all rows of Vk: ``down_chain``, block by block."""
    rows = down_block_rows(Vk.shape[1], Vk.itemsize)
    for r in range(0, Vk.shape[0], rows):
        down_chain(Vk, B_in, acc, r, min(r + rows, Vk.shape[0]), r == 0, c0, c1)


@serial
def _five_chains_in_strip(flat, din, B_in, out, p, r0, r1, c, first, ahead, a0, a1):
    """out[p + j, c:c+W] (= or +=) sum_{r in [r0, r1)} B_in[p + j, r] Vk[r, c:c+W], j < 5 (Vk flat; W: a strip).

    The five chains' strips stay in registers over all the rows (one line
    of each); meanwhile the elements a0, a0 + din, ... below a1 of ``ahead``
    (a strip of the next block) are prefetched, one per row. ``_five_chains_across_strips`` has
    its own copy of this loop, without the prefetch: with its 8-row blocks,
    calling this function strip by strip made steps at m = 1024 slower
    (docs/performance.md).
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
def _one_chain_in_strip(flat, din, B_in, out, p, r0, r1, c, first, ahead, a0, a1):
    """``_five_chains_in_strip`` for the one chain p."""
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
def _chains_in_strip(flat, din, B_in, out, p0, p1, r0, r1, c, first, a0, a1):
    """Chains [p0, p1) of a strip (``_five_chains_in_strip``, the rest ``_one_chain_in_strip``); the prefetch goes with the first call."""
    p = p0
    while p < p1:
        if p + 5 <= p1:
            _five_chains_in_strip(flat, din, B_in, out, p, r0, r1, c, first, flat, a0, a1)
            p += 5
        else:
            _one_chain_in_strip(flat, din, B_in, out, p, r0, r1, c, first, flat, a0, a1)
            p += 1
        a1 = a0  # prefetched


@serial
def _update_in_strip(flat, din, C, M, K, alpha, r0, r1, c):
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
def down_layer_cols(Vk, B_in, out, C, M, K, alpha, c0, c1):
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
            _chains_in_strip(flat, ld, B_in, out, 0, dy, r, re, c, r == 0, a0, a1)
            _update_in_strip(flat, ld, C, M, K, alpha, r, re, c)
            _chains_in_strip(flat, ld, B_in, out, dy, P, r, re, c, r == 0, 0, 0)
    # The columns after the last whole strip: the same three steps in plain
    # loops, skipped when there are none (their loops over the rows would
    # still run: steps at m = 32 and 64 took 1.1x as long: docs/performance.md).
    if full < c1:
        down_chain(Vk, B_in[:dy], out[:dy], 0, dout, True, full, c1)
        add_product(Vk, C, M, K, alpha, 0, dout, full, c1)
        down_chain(Vk, B_in[dy:], out[dy:], 0, dout, True, full, c1)


@serial
def prefetch_block(flat, din, r0, r1, c0, c1):
    """Prefetch rows [r0, r1) x columns [c0, c1) of a (., din) matrix stored flat (``llvm.prefetch``)."""
    line = LINE_BYTES // flat.itemsize
    for r in range(r0, r1):
        for q in range(r * din + c0, r * din + c1, line):
            prefetch(flat, q)


@serial
def down_layer_rows(Vk, B_in, part, acc, C, M, K, alpha, r0, r1, add):
    """Rows [r0, r1) of one downward layer: their terms of both chains and their update.

    part[p, c] = sum_{r in [r0, r1)} B_in[p, r] Vk[r, c], through the old rows
    for the old chain (p < d_y) and, after the update of each block of rows
    (DOWN_BYTES, at least DOWN_ROWS rows; as in ``up_layer``), through the new
    rows for the new chain. The terms accumulate in part itself or, with
    ``add``, in acc ((2 d_y, d_in), the thread's own), which is then added to
    part (part + terms, the order ``_sum_partial_chains`` adds partial chains in). After each
    block's old chain the next block is prefetched, where the rows are too
    many to stay in L1/L2 (WHOLE_MAX_WEIGHTS, as in ``up_layer``).
    """
    P = B_in.shape[0]
    dy = P // 2
    din, ld = part.shape[1], Vk.shape[1]
    flat = Vk.reshape(Vk.size)
    ahead = (r1 - r0) * din >= WHOLE_MAX_WEIGHTS
    rows = down_block_rows(din, Vk.itemsize)
    terms = acc if add else part
    for r in range(r0, r1, rows):
        re = min(r + rows, r1)
        down_chain(Vk, B_in[:dy], terms[:dy], r, re, r == r0, 0, din)
        if ahead and re < r1:
            prefetch_block(flat, ld, re, min(re + rows, r1), 0, din)
        add_product(Vk, C, M, K, alpha, r, re, 0, din)
        down_chain(Vk, B_in[dy:], terms[dy:], r, re, r == r0, 0, din)
    if add:
        if r1 > r0:
            for p in range(P):
                part[p] += acc[p]
    elif r1 == r0:
        part[:] = 0
