"""The compiled sweeps of the nonlinear CPU backend (cpu.py): two per step, all steps of a chunk in one call.

A step t, from the forward of batch t (h_i^T kept for every level, delta_L
of the objective at the top):

* downward sweep, i = L..1: each W_i is visited once, in column strips
  (TILE_VECTORS vectors wide) and, within a strip, blocks of ROW_BLOCK rows;
  each block first gives its rows' terms of g = W_i^T delta_i (with the old
  weights), then is updated W_i <- W_i - lr delta_i h_{i-1}^T while it is
  still in L1. So every weight is read from memory once and written once.
  Then b_i <- b_i - lr delta_i 1 and delta_{i-1} = phi'(z_{i-1}) * g,
  phi' written through h (elementwise.slope). Layer 1 skips g.
* batch t+1 is drawn (batches.py, the generator every backend shares) and
  its columns gathered into h_0;
* upward sweep, i = 1..L: z_i = W_i h_{i-1} + b_i in row tiles, the bias
  and phi applied to each tile's rows while they are in L1, h_i stored
  both as rows (the next layer's input) and transposed (for the update of
  the next downward sweep); at the top softmax (or the residual), the loss
  of each sample and delta_L in one pass over the samples.

Each sweep asks for what its next tiles read while the current ones run
(``llvm.prefetch``): going up the next unit's rows of W, going down the
next block of W and the strip's h^T. Without it, at (L, m, B) = (64, 128,
128) the rows of W came from L3 slower than the tiles used them.

All three products are register tiles (tiles.py). Layout: samples as
columns for the forward (z_i, h_i: d_i x B, the tiles' vectors run over
samples), samples as rows for the rest (h_i^T, delta_i^T, g^T: B x d_i, the
vectors run over a layer's columns), W_i row-major. Every width and the
batch are padded to whole vectors (LINE_BYTES) with zeros that stay zero:
padded weights, biases and inputs are 0, phi(0) = 0 for every activation,
and delta is 0 on padded outputs and samples, so their updates are 0.

Threads: a chunk runs ``run_thread`` on one thread, or on T Python threads
at once (cpu.py), meeting at a barrier after each layer (kernels/cpu/threads.py). Each product is split
into tiles (row tiles going up, column strips going down) and the bias
sums into rows, each computed whole by one thread with the same arithmetic;
no sum is split among threads, so the results do not depend on the number
of threads. The top pass (loss, delta_L) and the draws run on thread 0.
"""

import math
from typing import NamedTuple

import numpy as np
from ..cpu.strips import prefetch_block
from ..cpu.threads import barrier
from ..options import serial
from ..tuning import FORWARD_SAMPLES, LINE_BYTES, ROW_BLOCK, UPDATE_SAMPLES
from . import COMPLETED, CROSS_ENTROPY, DIVERGED, RELU, TANH
from .batches import draw_batch
from .elementwise import activate, slope, tanh, tanh32
from .tiles import TILE_ROWS, TILE_VECTORS, tile_row



class Net(NamedTuple):
    """Weights and biases, flat and padded: W_k at woff[k] is (pdims[k+1], pdims[k]); b_k at boff[k]."""

    W: np.ndarray
    woff: np.ndarray
    b: np.ndarray
    boff: np.ndarray
    dims: np.ndarray
    pdims: np.ndarray


class Buffers(NamedTuple):
    """Activations and deltas of one batch of ``columns`` (padded B) samples.

    HT: h_k^T for k = 0..L-1, (columns x pdims[k]) at hoff[k]. H0: the
    batch's inputs as columns (pdims[0] x columns); Ha, Hb: the forward's
    outputs as columns, in turn. delta[0], delta[1]: delta_i^T and the next
    layer's W^T delta in turn (columns x pdims). bias_sum: delta_i 1, in float64 (the
    sum cancels: in float32 its rounding, relative to the sum, grew to 4e-4).
    """

    HT: np.ndarray
    hoff: np.ndarray
    H0: np.ndarray
    Ha: np.ndarray
    Hb: np.ndarray
    delta: np.ndarray
    bias_sum: np.ndarray


class Data(NamedTuple):
    """Samples as rows: XT (n x pdims[0], padded), YT (n x d_L); the batch generator's perm and state."""

    XT: np.ndarray
    YT: np.ndarray
    perm: np.ndarray
    rng: np.ndarray
    per_sample: np.ndarray


class Run(NamedTuple):
    """Setup as the compiled loop takes it: codes, lr in the weights' dtype, B and its padded size."""

    activation: int
    loss: int
    lr: float
    batch: int
    columns: int
    minibatch: bool
    train_biases: bool


@serial
def _round_up(x, unit):
    return (x + unit - 1) // unit * unit


@serial
def _share(units, t, T):
    """Thread t's contiguous share [u0, u1) of ``units`` work units."""
    return units * t // T, units * (t + 1) // T


@serial
def _gather(net, bufs, data, count, Bp, H0, keep):
    """h_0 = the columns perm[:count] of X, into H0 (as columns of Bp) and, if ``keep``, h_0^T."""
    p0 = net.pdims[0]
    HT0 = bufs.HT[bufs.hoff[0]:bufs.hoff[1]]
    for j in range(count):
        x = data.XT[data.perm[j]]
        for c in range(p0):
            H0[c * Bp + j] = x[c]
        if keep:
            HT0[j * p0:(j + 1) * p0] = x


@serial
def _activate_row(row, bias, act):
    """row <- phi(row + bias); one loop per activation, so that each is vectorized."""
    if act == TANH and row.itemsize == 4:
        for j in range(row.size):
            row[j] = tanh32(row[j] + bias)
    elif act == TANH:
        for j in range(row.size):
            row[j] = tanh(row[j] + bias)
    elif act == RELU:
        for j in range(row.size):
            row[j] = activate(row[j] + bias, RELU)
    else:
        for j in range(row.size):
            row[j] = row[j] + bias


@serial
def _forward_units(net, bufs, run, k, H_in, H_out, Bp, keep, u0, u1, next_row):
    """Units [u0, u1) of z_{k+1} = W_{k+1} h_k + b; a unit is 4 rows x a block of FORWARD_SAMPLES samples.

    Each unit: the product (a row of register tiles), then, while its rows
    are in L1, the bias and phi (not at the top) and, if ``keep``, h^T.
    Units run block by block, so a block of h_k stays in L2 over all rows.
    Each unit first asks for the rows of W the next one reads (after the
    last unit: rows ``next_row`` .. + 4 of the next layer, if next_row >= 0).
    """
    pi, po = net.pdims[k], net.pdims[k + 1]
    lanes = LINE_BYTES // H_in.itemsize
    top = k == net.dims.size - 2
    tiles = po // TILE_ROWS
    HT = bufs.HT[bufs.hoff[k + 1]:] if keep and not top else bufs.HT[:0]
    for u in range(u0, u1):
        j0 = u // tiles * FORWARD_SAMPLES
        r = u % tiles * TILE_ROWS
        width = min(FORWARD_SAMPLES, Bp - j0)
        if u + 1 < u1:
            r_next = (u + 1) % tiles * TILE_ROWS
            prefetch_block(net.W[net.woff[k]:], pi, r_next, r_next + TILE_ROWS, 0, pi)
        elif next_row >= 0:
            prefetch_block(net.W[net.woff[k + 1]:], po, next_row, next_row + TILE_ROWS, 0, po)
        tile_row(net.W, net.woff[k] + r * pi, 1, pi, H_in, j0, Bp, net.dims[k], H_out, r * Bp + j0, Bp,
                 False, np.float64(0.0), width // lanes)
        for q in range(r, r + TILE_ROWS):
            row = H_out[q * Bp + j0:q * Bp + j0 + width]
            bias = net.b[net.boff[k] + q]
            if top:
                for j in range(width):
                    row[j] += bias
            else:
                _activate_row(row, bias, run.activation)
        if keep and not top:
            # Sample by sample, the tile's four rows side by side: one line of
            # h^T per sample (row by row, every store was to another line:
            # 0.09 ms of a 0.41 ms layer at m = 256, float64).
            h0, h1 = H_out[r * Bp + j0:], H_out[(r + 1) * Bp + j0:]
            h2, h3 = H_out[(r + 2) * Bp + j0:], H_out[(r + 3) * Bp + j0:]
            for j in range(width):
                o = (j0 + j) * po + r
                HT[o] = h0[j]
                HT[o + 1] = h1[j]
                HT[o + 2] = h2[j]
                HT[o + 3] = h3[j]


@serial
def _forward_sweep(t, T, flags, epoch, net, bufs, run, H0, Bp, keep):
    """The upward sweep over all layers, thread t's units of each, a barrier after each layer; returns (f, epoch)."""
    L = net.dims.size - 1
    blocks = (Bp + FORWARD_SAMPLES - 1) // FORWARD_SAMPLES
    H_out = bufs.Ha
    u0, u1 = _share(blocks * (net.pdims[1] // TILE_ROWS), t, T)
    for k in range(L):
        H_in = H0 if k == 0 else (bufs.Ha if k % 2 == 1 else bufs.Hb)
        H_out = bufs.Ha if k % 2 == 0 else bufs.Hb
        next_row, n0, n1 = -1, 0, 0
        if k + 1 < L:
            tiles = net.pdims[k + 2] // TILE_ROWS
            n0, n1 = _share(blocks * tiles, t, T)
            if n0 < n1:
                next_row = n0 % tiles * TILE_ROWS
        _forward_units(net, bufs, run, k, H_in, H_out, Bp, keep, u0, u1, next_row)
        u0, u1 = n0, n1
        epoch = barrier(flags, t, T, epoch)
    return H_out, epoch


@serial
def _loss_and_delta(net, data, run, F, DT):
    """Mean loss of the batch from f = F (d_L rows of ``columns``), and delta_L^T = dl/df^T into DT."""
    L = net.dims.size - 1
    dL, pL, Bp, B = net.dims[L], net.pdims[L], run.columns, run.batch
    DT[:Bp * pL] = 0
    for j in range(B):
        y = data.YT[data.perm[j]]
        delta = DT[j * pL:j * pL + dL]
        if run.loss == CROSS_ENTROPY:
            top = np.float64(F[j])
            for i in range(1, dL):
                if F[i * Bp + j] > top:
                    top = F[i * Bp + j]
            total = 0.0
            for i in range(dL):
                total += math.exp(F[i * Bp + j] - top)
            lse = top + math.log(total)
            fy = 0.0
            for i in range(dL):
                fy += y[i] * F[i * Bp + j]
                delta[i] = (math.exp(F[i * Bp + j] - lse) - y[i]) / B
            data.per_sample[j] = lse - fy
        else:
            total = 0.0
            for i in range(dL):
                e = np.float64(F[i * Bp + j]) - y[i]
                total += e * e
                delta[i] = e / B
            data.per_sample[j] = 0.5 * total
    total = 0.0
    for j in range(B):  # in order: the same sum on every thread count
        total += data.per_sample[j]
    return total / B


@serial
def _down_strip(net, bufs, run, k, DT, GT, backprop, strip, next_k, next_c):
    """One column strip of W_{k+1}: g^T = delta^T W (if ``backprop``) and W -= lr delta h_k^T, block by block.

    Then, the strip's columns of g being complete, delta_k^T = phi'(z_k^T) * g^T
    on them in place (zero on the rows after the batch's samples).
    While a block's backward product runs, it asks for the strip's h_k^T
    (for the update) and for the block after it: the strip's next rows,
    else the first block of the strip at column ``next_c`` of W_{next_k + 1}
    (none if next_k < 0).
    """
    pi, po, do = net.pdims[k], net.pdims[k + 1], net.dims[k + 1]
    lanes = LINE_BYTES // net.W.itemsize
    c = strip * TILE_VECTORS * lanes
    vectors = min(TILE_VECTORS, (pi - c) // lanes)
    w0, h0 = net.woff[k], bufs.hoff[k]
    samples = _round_up(run.batch, TILE_ROWS)
    rows = _round_up(do, TILE_ROWS)
    for rb in range(0, do, ROW_BLOCK):
        ak, ac, ar = k, c, rb + ROW_BLOCK
        if ar >= do:
            ak, ac, ar = next_k, next_c, 0
        a_in = net.pdims[ak] if ak >= 0 else 0
        a_rows = min(ROW_BLOCK, net.dims[ak + 1] - ar) if ak >= 0 else 0
        a_cols = min(TILE_VECTORS * lanes, a_in - ac)
        if backprop:
            for j in range(0, samples, TILE_ROWS):
                i0, i1 = ar + j * a_rows // samples, ar + (j + TILE_ROWS) * a_rows // samples
                prefetch_block(net.W[net.woff[ak]:] if ak >= 0 else net.W[:0], a_in, i0, i1, ac, ac + a_cols)
                if rb == 0:  # the strip's h^T, for the updates of every block
                    prefetch_block(bufs.HT[h0:], pi, j, min(j + TILE_ROWS, run.batch), c, c + vectors * lanes)
                tile_row(DT, j * po + rb, 1, po, net.W, w0 + rb * pi + c, pi, min(rb + ROW_BLOCK, do) - rb,
                         GT, j * pi + c, pi, rb > 0, np.float64(1.0), vectors)
        for j0 in range(0, run.batch, UPDATE_SAMPLES):
            for r in range(rb, min(rb + ROW_BLOCK, rows), TILE_ROWS):
                tile_row(DT, j0 * po + r, po, 1, bufs.HT, h0 + j0 * pi + c, pi, min(UPDATE_SAMPLES, run.batch - j0),
                         net.W, w0 + r * pi + c, pi, True, -np.float64(run.lr), vectors)
    if backprop:
        width = vectors * lanes
        for j in range(run.columns):
            g = GT[j * pi + c:j * pi + c + width]
            if j >= run.batch:
                g[:] = 0
                continue
            h = bufs.HT[h0 + j * pi + c:h0 + j * pi + c + width]
            if run.activation == TANH:
                for i in range(width):
                    g[i] = g[i] * (1 - h[i] * h[i])
            else:
                for i in range(width):
                    g[i] = g[i] * slope(h[i], run.activation)


@serial
def _strips(net, k):
    """Column strips of W_{k+1} (none for k < 0)."""
    width = TILE_VECTORS * (LINE_BYTES // net.W.itemsize)
    return (net.pdims[k] + width - 1) // width if k >= 0 else 0


@serial
def _update_bias(net, bufs, run, k, DT, r0, r1):
    """b_{k+1}[r0:r1] -= lr sum_j delta_j[r0:r1] (delta^T's columns summed over the batch's samples)."""
    po = net.pdims[k + 1]
    acc = bufs.bias_sum[r0:r1]
    acc[:] = 0
    for j in range(run.batch):
        row = DT[j * po + r0:j * po + r1]
        for r in range(r1 - r0):
            acc[r] += row[r]
    b = net.b[net.boff[k] + r0:net.boff[k] + r1]
    for r in range(r1 - r0):
        b[r] -= run.lr * acc[r]


@serial
def run_thread(t, T, flags, net, bufs, data, run, loss_out, shared, result, start):
    """Thread t of T: up to loss_out.size steps (module docstring), barriers between the layers.

    ``start``: the first step only draws, gathers and goes up (loss(0)).
    Every thread reads the same loss after the top's barrier, so all stop
    together. result = [steps done, status].
    """
    L = net.dims.size - 1
    lanes = LINE_BYTES // net.W.itemsize
    epoch = 0
    for step in range(loss_out.size):
        if not (start and step == 0):
            for k in range(L - 1, -1, -1):
                DT = bufs.delta[(L - 1 - k) % 2]
                GT = bufs.delta[(L - k) % 2]
                s0, s1 = _share(_strips(net, k), t, T)
                for s in range(s0, s1):
                    next_k, next_c = k, (s + 1) * TILE_VECTORS * lanes
                    if s + 1 == s1:
                        next_k, next_c = k - 1, _share(_strips(net, k - 1), t, T)[0] * TILE_VECTORS * lanes
                    _down_strip(net, bufs, run, k, DT, GT, k > 0, s, next_k, next_c)
                if run.train_biases:
                    r0, r1 = _share(net.dims[k + 1], t, T)
                    _update_bias(net, bufs, run, k, DT, r0, r1)
                epoch = barrier(flags, t, T, epoch)
        if t == 0 and (run.minibatch or (start and step == 0)):
            if run.minibatch:
                draw_batch(data.rng, data.perm, run.batch)
            _gather(net, bufs, data, run.batch, run.columns, bufs.H0, True)
        epoch = barrier(flags, t, T, epoch)
        F, epoch = _forward_sweep(t, T, flags, epoch, net, bufs, run, bufs.H0, run.columns, True)
        if t == 0:
            shared[0] = _loss_and_delta(net, data, run, F, bufs.delta[0])
            loss_out[step] = shared[0]
        epoch = barrier(flags, t, T, epoch)
        if not math.isfinite(shared[0]):
            result[0] = step + 1
            result[1] = DIVERGED
            return
    result[0] = loss_out.size
    result[1] = COMPLETED


@serial
def count_thread(t, T, flags, net, bufs, data, run, H0, labels, shared):
    """Thread t's part of the accuracy count (``accuracy``): chunks of ``columns`` samples, forward, argmax."""
    L = net.dims.size - 1
    n, Bp, dL = labels.size, run.columns, net.dims[L]
    epoch = 0
    for j0 in range(0, n, Bp):
        count = min(Bp, n - j0)
        if t == 0:
            for j in range(count):
                data.perm[j] = j0 + j
            _gather(net, bufs, data, count, Bp, H0, False)
        epoch = barrier(flags, t, T, epoch)
        F, epoch = _forward_sweep(t, T, flags, epoch, net, bufs, run, H0, Bp, False)
        if t == 0:
            for j in range(count):
                best = 0
                for i in range(1, dL):
                    if F[i * Bp + j] > F[best * Bp + j]:
                        best = i
                shared[0] += best == labels[j0 + j]
        epoch = barrier(flags, t, T, epoch)
