"""The passes of the CPU step and the loop over steps (see the package docstring and docs/design.md).

``up_pass`` and ``down_pass`` are one thread's share of one step in each
direction; ``run_chunk`` is thread t's loop over a chunk of steps: one
thread sweeping all ranges (T = 1), or one of T threads each sweeping its
own range and meeting the others at a barrier between layers
(``threads``). It is the one compiled entry point of the backend: the
Python side starts it on one thread or on T. Both give the same bits.
Arguments are the named tuples of ``layout``: ``net`` (weights and
chains), ``data`` (Y, G = X^T X, rates) and ``scratch`` (per-thread
buffers).
"""

import math

import numpy as np

from .. import COMPLETED, CONVERGED, DIVERGED
from ..options import serial
from .layout import level, stored_layer, swept_by_columns
from .strips import down_chain_blocks, down_layer_cols, down_layer_rows
from .threads import barrier, thread_range, unit_range
from .tiles import add_product, set_block, small_product_t, up_chain, up_layer


@serial
def _sum_partial_chains(parts, R, out, c0, c1):
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
def _residual_loss(E, ET, f_T, Y):
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
def _step_first_layer(Z_T, B1, E, eta0, G, S_T, M_T, c0, c1):
    """The first layer's step on columns [c0, c1) of Z^T (see "The first layer" in the package docstring).

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
def up_pass(t, T, R, flags, epoch, net, data, scratch):
    """Thread t of T: step t -> t+1 going up; returns (loss(t+1), epoch).

    Every layer is split into R row ranges (``unit_range``); thread t sweeps range
    t (T = R) or one thread all of them (T = 1, ``thread_range``), with the same
    arithmetic, so the result is the same either way.

    The gradient step of layer k is eta_k B^T E A^T = alpha C^T M with rank
    r = min(n, d_y). d_y <= n: C = B (cached), M = E A^T, alpha = -eta_k;
    d_y > n: C = eta_k E^T B on the thread's own rows, M = A^T, alpha = -1.
    Either way M is what the old chain carries up (its r "old rows" of each
    level, see ``layout``): E A_{k+1}^T = (E A_k^T) V_k^T is the
    same product as A_{k+1} = V_k A_k, on d_y rows instead of n, so the
    factor is never formed from A.
    """
    V, voff, dims, A2, aoff, B2, boff = net
    Y, G, eta = data
    E, ET, Cf = scratch.E[t], scratch.ET[t], scratch.Cf[t]
    S_T, M_T = scratch.S_T, scratch.M_T
    dy, n = E.shape
    L = dims.size - 1
    # Level 1 holds Z(t)^T in its new half: its old rows (E Z^T or Z^T) from it, then step it.
    Z2 = level(A2, aoff, dims, 1, 2 * n)
    c0, c1 = thread_range(dims[1], t, T, R)
    if dy <= n:
        set_block(Z2, ET, Z2[n:], n, 1.0, 0, dy, c0, c1)
    else:
        for s in range(n):
            Z2[s][c0:c1] = Z2[n + s][c0:c1]
    _step_first_layer(Z2[n:], level(B2, boff, dims, 1, 2 * dy)[dy:], E, eta[0], G, S_T, M_T, c0, c1)
    epoch = barrier(flags, t, T, epoch)
    for k in range(1, L):
        dout = dims[k + 1]
        Vk = stored_layer(V, voff, dims, k)
        A_in = level(A2, aoff, dims, k, 2 * n)
        A_out = level(A2, aoff, dims, k + 1, 2 * n)
        B_cached = level(B2, boff, dims, k + 1, 2 * dy)[dy:]
        r0, r1 = thread_range(dout, t, T, R)
        if dy <= n:
            up_layer(Vk, A_in, A_out, B_cached, A_in[:dy], dy, -eta[k], r0, r1)
        else:
            set_block(Cf, E, B_cached, dy, eta[k], 0, n, r0, r1)
            up_layer(Vk, A_in, A_out, Cf, A_in[:n], n, -1.0, r0, r1)
        epoch = barrier(flags, t, T, epoch)
    return _residual_loss(E, ET, level(A2, aoff, dims, L, 2 * n)[n:], Y), epoch


@serial
def down_pass(t, T, R, flags, epoch, net, data, scratch):
    """Thread t of T: step t+1 -> t+2 going down; returns (loss(t+2), epoch).

    A layer whose rows are at most COLUMNS_MAX_ROW_BYTES long is split among
    the threads by columns: thread t sweeps all rows of its range of columns
    (``thread_range``, as going up with rows) in strips (``down_layer_cols``), so its
    columns of both chains come out whole, and it forms the factor M for its
    columns only. A longer layer is split by rows: thread u sweeps row range
    u into its own partial chains (``parts[k % 2, u]``); after a barrier each
    thread sums the partials for the columns that are its rows of the next
    layer down (``_sum_partial_chains``), and the two sets of partials alternate so
    that no second barrier is needed before they are written again. One
    thread (T = 1) sweeps all columns, or adds range after range straight
    into B in the order ``_sum_partial_chains`` adds them: the same bits either way.
    The gradient factors are those of ``up_pass`` with the roles swapped:
    d_y <= n: C = B (old), M = E A^T (cached A); d_y > n: C = eta E^T B,
    M = A^T.
    """
    V, voff, dims, A2, aoff, B2, boff = net
    Y, G, eta = data
    E, ET, Cf, Mf, blk, f_T = scratch.E[t], scratch.ET[t], scratch.Cf[t], scratch.Mf[t], scratch.blks[t], scratch.f_T[t]
    S_T, M_T, parts, fparts = scratch.S_T, scratch.M_T, scratch.parts, scratch.fparts
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
        if swept_by_columns(din, Vk.itemsize):
            c0, c1 = thread_range(din, t, T, R)
            if dy <= n:
                down_chain_blocks(A_cached, E, Mf, c0, c1)  # M = E A^T on this thread's columns
                down_layer_cols(Vk, B_in, B_out, B_in[:dy], Mf, dy, -eta[k], c0, c1)
            else:
                set_block(Cf, E, B_in[:dy], dy, eta[k], 0, n, 0, dout)  # C on all rows
                down_layer_cols(Vk, B_in, B_out, Cf, A_cached, n, -1.0, c0, c1)
            epoch = barrier(flags, t, T, epoch)  # the next layer reads all of B_out
            continue
        acc = blk[:P * din].reshape((P, din))
        if dy <= n:
            down_chain_blocks(A_cached, E, Mf, 0, din)  # M = E A^T: a downward chain through A^T's n rows
        for u in range(t, R, T):
            r0, r1 = unit_range(dout, u, R)
            # One thread adds range after range straight into B, as _sum_partial_chains would.
            part = B_out if T == 1 else parts[k % 2, u][:P * din].reshape((P, din))
            add = T == 1 and u > 0
            if dy <= n:
                down_layer_rows(Vk, B_in, part, acc, B_in[:dy], Mf, dy, -eta[k], r0, r1, add)
            else:
                set_block(Cf, E, B_in[:dy], dy, eta[k], 0, n, r0, r1)
                down_layer_rows(Vk, B_in, part, acc, Cf, A_cached, n, -1.0, r0, r1, add)
        if T > 1:
            epoch = barrier(flags, t, T, epoch)
            c0, c1 = unit_range(din, t, T)
            _sum_partial_chains(parts[k % 2], R, B_out, c0, c1)
            if k > 1 and swept_by_columns(dims[k - 1], Vk.itemsize):
                epoch = barrier(flags, t, T, epoch)  # a layer split by columns reads all of B_out
    # The first layer steps Z(t+1) -> Z(t+2) in place on this thread's
    # columns of B_1 (the ones it has just swept or summed); f(t+2)^T =
    # Z^T B'_1^T, summed over ranges.
    Z_T = level(A2, aoff, dims, 1, 2 * n)[n:]
    B1 = level(B2, boff, dims, 1, P)
    c0, c1 = thread_range(dims[1], t, T, R)
    _step_first_layer(Z_T, B1[:dy], E, eta[0], G, S_T, M_T, c0, c1)
    for u in range(t, R, T):  # f sums over the ranges one by one, in any case
        c0, c1 = unit_range(dims[1], u, R)
        small_product_t(Z_T, B1[dy:], fparts[u], n, dy, c0, c1)
    epoch = barrier(flags, t, T, epoch)
    f_T[:] = fparts[0]
    for u in range(1, R):
        f_T += fparts[u]
    return _residual_loss(E, ET, f_T, Y), epoch


@serial
def run_chunk(t, T, R, flags, net, data, scratch, phase, loss_out, loss_stop, result):
    """Thread t of T (R or 1): up to len(loss_out) steps over R ranges; result = (done, status, phase).

    With T = R each thread sweeps its own range of every layer; with T = 1
    one thread sweeps all R ranges (no barriers). Every thread computes the
    same loss from the same f, so all stop together; thread 0 writes the
    losses.
    """
    epoch = np.int64(0)  # not a literal 0: with it both passes were built twice
    done, status = loss_out.size, COMPLETED
    for i in range(loss_out.size):
        if phase == 0:
            loss, epoch = up_pass(t, T, R, flags, epoch, net, data, scratch)
        else:
            loss, epoch = down_pass(t, T, R, flags, epoch, net, data, scratch)
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
def _prefix_levels(t, T, flags, epoch, V, voff, dims, V1, A, aoff, n):
    """Thread t's rows of A's levels 1..L (``prefix_chains``); returns the barrier epoch."""
    lo, hi = unit_range(dims[1], t, T)
    up_chain(V1, level(A, aoff, dims, 0, n), level(A, aoff, dims, 1, n), lo, hi, A, 0, 0)
    epoch = barrier(flags, t, T, epoch)
    for k in range(1, len(dims) - 1):
        lo, hi = unit_range(dims[k + 1], t, T)
        up_chain(stored_layer(V, voff, dims, k), level(A, aoff, dims, k, n), level(A, aoff, dims, k + 1, n),
                 lo, hi, A, 0, 0)
        epoch = barrier(flags, t, T, epoch)
    return epoch


@serial
def _suffix_levels(t, T, flags, epoch, V, voff, dims, B, boff, rows, first):
    """Thread t's columns of B's levels L-1..1 (``suffix_chains``); returns the barrier epoch."""
    for k in range(len(dims) - 2, 0, -1):
        c0, c1 = unit_range(dims[k], t, T)
        down_chain_blocks(stored_layer(V, voff, dims, k), level(B, boff, dims, k + 1, rows)[first:],
                          level(B, boff, dims, k, rows)[first:], c0, c1)
        epoch = barrier(flags, t, T, epoch)
    return epoch


@serial
def prefix_chains(t, T, flags, V, voff, dims, V1, A, aoff, n):
    """Thread t of T: its rows of the prefix chains of the current weights, into A's levels 1..L.

    Level j holds A_{j+1}^T, (n, d_j), from level 0 (X^T): level 1 = X^T V1^T
    with V1 the first layer as it is now, level k + 1 from the stored layer
    k. For ``chains()`` after a downward pass, when the kernel holds only the
    suffix side; the upward sweep's tile kernel does the products (NumPy's
    BLAS does these skinny ones at a third of its rate). Rows are split as in
    the passes (``unit_range``), so any T gives the same bits; the threads
    meet after each layer.
    """
    _prefix_levels(t, T, flags, np.int64(0), V, voff, dims, V1, A, aoff, n)


@serial
def suffix_chains(t, T, flags, V, voff, dims, B, boff, rows, first):
    """Thread t of T: its columns of the suffix chains of the stored weights, B_{L-1}..B_1, from B_L.

    Level j of B is (rows, d_j) and holds B_j in its rows from ``first`` on
    (the new half of the kernel's B2, or a buffer of d_y rows); level L
    (the identity) is given. B_j = B_{j+1} V_{j+1} by the downward sweep's
    strip kernel (``down_chain_blocks``) on columns split as in the passes,
    so any T gives the same bits; the threads meet after each layer.
    """
    _suffix_levels(t, T, flags, np.int64(0), V, voff, dims, B, boff, rows, first)


@serial
def start_chains(t, T, flags, V, voff, dims, A, aoff, n, B, boff, rows, first):
    """Thread t of T: the chains of step 0 from the stored weights, ``prefix_chains`` then ``suffix_chains``.

    The upward sweep goes first and the downward one starts at the top
    layer, which it has just read.
    """
    epoch = _prefix_levels(t, T, flags, np.int64(0), V, voff, dims, stored_layer(V, voff, dims, 0), A, aoff, n)
    _suffix_levels(t, T, flags, epoch, V, voff, dims, B, boff, rows, first)
