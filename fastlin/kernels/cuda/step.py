"""numba.cuda device code of the one-pass fused GD step (docs/design.md), for any batch of nets.

One kernel template, compiled per (n, d_y, dtype, mode):

* ``coop=True``: ONE configuration spread over a cooperative grid; layers are
  separated by ``cuda.cg.this_grid().sync()`` (the large-width kernel).
* ``coop=False``: one thread block per configuration, layers separated by
  ``cuda.syncthreads()`` (the batched small-width kernel; also one small net).

Both loop over a chunk of steps inside the launch and write loss(t) of every
step on the device; the host only reads the loss history back. The scheme is
the CPU kernel's: alternating upward and downward passes, chains stored
transposed with two halves per level (``A2`` level j is (2n, d_j): old A
rows 0..n-1, new A' rows n..2n-1; ``B2`` level j is (2 d_y, d_j): old B,
new B'), the gradient step eta_i B_i^T E A_i^T = Lf^T Rf of rank
r = min(n, d_y), never formed. Each weight is loaded once into a register,
used for the old chain, updated, used for the new chain and stored once:
2 x itemsize bytes of weight traffic per parameter per step.

Work split. Upward layer i (V_i is d_out x d_in, row-major): a block takes a
tile of ``RT`` rows; ``TPR = TPB / RT`` threads share a row, striding over its
columns (coalesced), each accumulating partial sums of A_{i+1}[s, r] and
A'_{i+1}[s, r] over its columns; a shared-memory reduction finishes them.
Downward layer i: a block takes a chunk of ``CB`` columns; ``RS = TPB / CB``
threads share a column, striding over the rows, accumulating partials of
B_{i-1}[p, c] and B'_{i-1}[p, c]; the same reduction finishes them. Warp
shuffles would be cheaper, but the simulator has none and CI tests this code
there: the shared-memory reduction is the one path both run.

The rank-r factors: the side that varies along the layer's "long" index
(rows going up: Lf[q, r]; columns going down: Rf[q, c]) is formed on the fly
from the cached chain; the other side is written by the owners of the
previous layer's outputs into a parity buffer ``F`` (Rf = E A^T going up
when d_y <= n; Lf = eta E^T B going down when d_y > n) or read straight from
the chains (Rf = A^T going up when d_y > n; Lf = eta B going down when
d_y <= n).

The first layer is never swept, as in the CPU kernel (``kernels/cpu``, "The first
layer"): V_1 enters the loss only through Z = V_1 X, so level 1 of ``A2``
holds Z^T and the kernel steps Z <- Z - M G with M = eta_1 B_1^T E and
G = X^T X (n x n), accumulating S^T = sum M^T in ``S``; the host forms
V_1 = V_1(0) - S X^T when the weights are asked for. A step then reads no
m x d_x layer (a third of the weights of L = 64, m = 32 on the paper's data).

Per-configuration metadata (absolute offsets into the flat buffers):
``dims[c, j]`` = d_j, ``voff[c, k]`` start of V_{k+1}, ``aoff``/``boff[c, j]``
start of level j of A2/B2, ``foff[c] = (parity 0, parity 1, leading dim)`` of
F, ``soff[c]`` start of S^T (n x d_1), ``eta[c, k]`` = eta_{k+1} = lr / d_{k+1},
``nlayers[c]`` = L.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numba
import numpy as np

from .. import COMPLETED, CONVERGED, DIVERGED
from ..tuning import DOWN_COLS, REDUCTION_BYTES, THREADS_PER_BLOCK, UP_ROWS
from .compat import cuda

# Static shared memory a block may use without opting in (a limit of the hardware, not a tuning choice).
SHARED_LIMIT = 48 * 1024


@cuda.jit(device=True)
def _grid_sync():
    cuda.cg.this_grid().sync()


@cuda.jit(device=True)
def _block_sync():
    cuda.syncthreads()


def shared_bytes(n, dy, dtype, tpb=THREADS_PER_BLOCK, up_rows=UP_ROWS, down_cols=DOWN_COLS,
                 reduction_bytes=REDUCTION_BYTES):
    """Static shared memory of one block of the step kernel, in bytes."""
    item = np.dtype(dtype).itemsize
    kmax = 2 * max(n, dy)
    slots = _reduction_slots(kmax, tpb, item, reduction_bytes)
    return item * (dy * n + slots * tpb + kmax * max(up_rows, down_cols)) + 8


def step_signature(dtype):
    """Numba argument types of the step kernel, as ``Batch.run`` passes them.

    Weights, chains, factors and S flat (1-D), E, f^T, Y, G and the rates 2-D
    in ``dtype``; metadata int64; losses float64; all C-contiguous.
    """
    from numba import types

    dt = numba.from_dtype(np.dtype(dtype))
    flat, table = types.Array(dt, 1, "C"), types.Array(dt, 2, "C")
    i1, i2 = types.Array(types.int64, 1, "C"), types.Array(types.int64, 2, "C")
    f1, f2 = types.Array(types.float64, 1, "C"), types.Array(types.float64, 2, "C")
    # V, A2, B2, F, S, E_g, ft_g, Y, G, dims, voff, aoff, boff, foff, soff, eta,
    # nlayers, phase, todo, loss_stop, loss_out, done, status
    return (flat, flat, flat, flat, flat, table, table, table, table, i2, i2, i2, i2, i2, i1, table,
            i1, i1, i1, f1, f2, i1, i1)


def _reduction_slots(kmax, tpb, item, reduction_bytes):
    return max(1, min(kmax, reduction_bytes // (tpb * item)))


@lru_cache(maxsize=None)
def make_step_kernel(n, dy, dtype, coop, tpb=THREADS_PER_BLOCK, up_rows=UP_ROWS, down_cols=DOWN_COLS,
                     reduction_bytes=REDUCTION_BYTES):
    """Compile-time specialized step kernel for n samples, d_y outputs, ``dtype``.

    Returns ``kernel(V, A2, B2, F, S, E_g, ft_g, Y, G, dims, voff, aoff, boff,
    foff, soff, eta, nlayers, phase, todo, loss_stop, loss_out, done, status)``;
    launch it with ``tpb`` threads per block and, for ``coop``, a cooperative
    grid (one configuration), else one block per configuration.
    """
    N, DY = int(n), int(dy)
    RANK = min(N, DY)
    DT = numba.from_dtype(np.dtype(dtype))
    TPB, RT, CB = int(tpb), int(up_rows), int(down_cols)
    if TPB % RT or TPB % CB:
        raise ValueError(f"tpb={TPB} must be a multiple of up_rows={RT} and down_cols={CB}")
    TPR, RS = TPB // RT, TPB // CB
    KUP, KDOWN = 2 * N, 2 * DY
    KMAX = max(KUP, KDOWN)
    OUTW = max(RT, CB)
    SG = _reduction_slots(KMAX, TPB, np.dtype(dtype).itemsize, reduction_bytes)
    NE = N * DY
    # Shared-array shapes must be constants when typed: products formed here, not in the kernel.
    RED_LEN = SG * TPB
    OUT_LEN = KMAX * OUTW
    group_sync = _grid_sync if coop else _block_sync
    COOP = bool(coop)

    @cuda.jit(device=True)
    def reduce_partials(acc, K, red, out, nout, P, o_major, t):
        """out[k * nout + o] = sum over the P threads of output slot o of their acc[k].

        Thread t holds slot o, partner p: t = o * P + p (o_major) or p * nout + o.
        Runs in groups of SG slots through ``red``; every thread of the block calls it.
        """
        for g0 in range(0, K, SG):
            g1 = min(g0 + SG, K)
            for k in range(g0, g1):
                red[(k - g0) * TPB + t] = acc[k]
            cuda.syncthreads()
            for idx in range(t, (g1 - g0) * nout, TPB):
                kk = idx // nout
                o = idx - kk * nout
                total = DT(0)
                for p in range(P):
                    src = o * P + p if o_major else p * nout + o
                    total += red[kk * TPB + src]
                out[(g0 + kk) * nout + o] = total
            cuda.syncthreads()

    @cuda.jit(device=True)
    def first_layer(up, cfg, gt, gthreads, A2, B2, F, S, Esh, G, dims, aoff, boff, foff, soff, eta):
        """Z <- Z - M G and S += M, M = eta_1 B_1^T E, on this thread's columns of Z^T.

        Going up (``up``) B_1 is the cached B_1(t) and the old half of level 1
        gets Z(t) first (the next layer's old chain), with the next layer's
        Rf = E Z(t)^T when d_y <= n; going down B_1 is B_1(t+1), just formed.
        """
        d1 = dims[cfg, 1]
        z = aoff[cfg, 1]  # level 1 is Z^T, (2n, d_1): old half, then new half
        b1 = boff[cfg, 1] + (DY * d1 if up else 0)
        so = soff[cfg]
        e = eta[cfg, 0]
        fo = foff[cfg, 1]  # parity of layer index 1
        ld = foff[cfg, 2]
        m = cuda.local.array(N, DT)
        for r in range(gt, d1, gthreads):
            for s in range(N):
                x = DT(0)
                for q in range(DY):
                    x += B2[b1 + q * d1 + r] * Esh[q * N + s]
                m[s] = e * x
                S[so + s * d1 + r] += m[s]
            if up:
                for s in range(N):
                    A2[z + s * d1 + r] = A2[z + (N + s) * d1 + r]
                if DY <= N:
                    for q in range(RANK):
                        x = DT(0)
                        for s in range(N):
                            x += Esh[q * N + s] * A2[z + s * d1 + r]
                        F[fo + q * ld + r] = x
            for j in range(N):
                x = DT(0)
                for s in range(N):
                    x += m[s] * G[s, j]
                A2[z + (N + j) * d1 + r] -= x

    @cuda.jit(device=True)
    def up_layer(k, cfg, gb, ngb, t, V, A2, B2, F, Esh, red, out, dims, voff, aoff, boff, foff, eta):
        """V_k(t+1) = V_k - Lf^T Rf, A_{k+1} = V_k A_k (old), A'_{k+1} = V_k(t+1) A'_k (new)."""
        din = dims[cfg, k]
        dout = dims[cfg, k + 1]
        vo = voff[cfg, k]
        ain = aoff[cfg, k]
        aout = aoff[cfg, k + 1]
        bc = boff[cfg, k + 1] + DY * dout  # cached suffix chain B_{k+1}(t), (d_y, d_out)
        fk = foff[cfg, k % 2]
        fnext = foff[cfg, (k + 1) % 2]
        ld = foff[cfg, 2]
        e = eta[cfg, k]
        o = t // TPR
        p = t - o * TPR
        acc = cuda.local.array(KUP, DT)
        lf = cuda.local.array(RANK, DT)
        for tile in range(gb, (dout + RT - 1) // RT, ngb):
            r = tile * RT + o
            for s in range(KUP):
                acc[s] = 0
            if r < dout:
                # Row factor Lf[:, r]: eta B[:, r] (d_y <= n) or eta E^T B[:, r].
                if DY <= N:
                    for q in range(RANK):
                        lf[q] = e * B2[bc + q * dout + r]
                else:
                    for s in range(RANK):
                        x = DT(0)
                        for q in range(DY):
                            x += Esh[q * N + s] * B2[bc + q * dout + r]
                        lf[s] = e * x
                row = vo + r * din
                for c in range(p, din, TPR):
                    v = V[row + c]
                    for s in range(N):
                        acc[s] += v * A2[ain + s * din + c]
                    g = DT(0)
                    for q in range(RANK):
                        if DY <= N:
                            g += lf[q] * F[fk + q * ld + c]  # Rf = E A^T, written by layer k-1
                        else:
                            g += lf[q] * A2[ain + q * din + c]  # Rf = A^T
                    v_new = v - g
                    V[row + c] = v_new
                    for s in range(N):
                        acc[N + s] += v_new * A2[ain + (N + s) * din + c]
            reduce_partials(acc, KUP, red, out, RT, TPR, True, t)
            for idx in range(t, KUP * RT, TPB):
                kk = idx // RT
                oo = idx - kk * RT
                rr = tile * RT + oo
                if rr < dout:
                    A2[aout + kk * dout + rr] = out[idx]
            if DY <= N:
                # Rf of layer k+1: E A_{k+1}^T, column rr, from the old chain just formed.
                for idx in range(t, RANK * RT, TPB):
                    q = idx // RT
                    oo = idx - q * RT
                    rr = tile * RT + oo
                    if rr < dout:
                        x = DT(0)
                        for s in range(N):
                            x += Esh[q * N + s] * out[s * RT + oo]
                        F[fnext + q * ld + rr] = x

    @cuda.jit(device=True)
    def down_layer(k, L, cfg, gb, ngb, t, V, A2, B2, F, Esh, red, out, dims, voff, aoff, boff, foff, eta):
        """V_k(t+2) = V_k - Lf^T Rf, B_{k-1} = B_k V_k (old), B'_{k-1} = B'_k V_k(t+2) (new)."""
        din = dims[cfg, k]
        dout = dims[cfg, k + 1]
        vo = voff[cfg, k]
        bin_ = boff[cfg, k + 1]
        bout = boff[cfg, k]
        acached = aoff[cfg, k] + N * din  # cached prefix chain A_k(t+1), (n, d_in)
        fk = foff[cfg, k % 2]
        fnext = foff[cfg, (k + 1) % 2]
        ld = foff[cfg, 2]
        e = eta[cfg, k]
        o = t % CB
        p = t // CB
        acc = cuda.local.array(KDOWN, DT)
        rf = cuda.local.array(RANK, DT)
        for chunk in range(gb, (din + CB - 1) // CB, ngb):
            c = chunk * CB + o
            for q in range(KDOWN):
                acc[q] = 0
            if c < din:
                # Column factor Rf[:, c]: E A[:, c] (d_y <= n) or A^T[:, c].
                for q in range(RANK):
                    if DY <= N:
                        x = DT(0)
                        for s in range(N):
                            x += Esh[q * N + s] * A2[acached + s * din + c]
                        rf[q] = x
                    else:
                        rf[q] = A2[acached + q * din + c]
                for r in range(p, dout, RS):
                    v = V[vo + r * din + c]
                    for q in range(DY):
                        acc[q] += B2[bin_ + q * dout + r] * v
                    g = DT(0)
                    for q in range(RANK):
                        if DY <= N:
                            lq = e * B2[bin_ + q * dout + r]
                        elif k == L - 1:
                            lq = e * Esh[r * N + q]  # B_L = I: Lf = eta E^T
                        else:
                            lq = F[fk + q * ld + r]  # eta E^T B, written by layer k+1
                        g += lq * rf[q]
                    v_new = v - g
                    V[vo + r * din + c] = v_new
                    for q in range(DY):
                        acc[DY + q] += B2[bin_ + (DY + q) * dout + r] * v_new
            reduce_partials(acc, KDOWN, red, out, CB, RS, False, t)
            for idx in range(t, KDOWN * CB, TPB):
                kk = idx // CB
                oo = idx - kk * CB
                cc = chunk * CB + oo
                if cc < din:
                    B2[bout + kk * din + cc] = out[idx]
            if DY > N and k > 1:
                # Lf of layer k-1: eta E^T B_{k-1}, row cc, from the old chain just formed
                # (the first layer forms its own M).
                en = eta[cfg, k - 1]
                for idx in range(t, N * CB, TPB):
                    s = idx // CB
                    oo = idx - s * CB
                    cc = chunk * CB + oo
                    if cc < din:
                        x = DT(0)
                        for q in range(DY):
                            x += Esh[q * N + s] * out[q * CB + oo]
                        F[fnext + s * ld + cc] = en * x

    @cuda.jit
    def step_kernel(V, A2, B2, F, S, E_g, ft_g, Y, G, dims, voff, aoff, boff, foff, soff, eta,
                    nlayers, phase, todo, loss_stop, loss_out, done, status):
        t = cuda.threadIdx.x
        if COOP:
            cfg = 0
            gb = cuda.blockIdx.x
            ngb = cuda.gridDim.x
        else:
            cfg = cuda.blockIdx.x
            gb = 0
            ngb = 1
        Esh = cuda.shared.array(NE, DT)
        red = cuda.shared.array(RED_LEN, DT)
        out = cuda.shared.array(OUT_LEN, DT)
        loss_sh = cuda.shared.array(1, numba.float64)
        L = nlayers[cfg]
        d1 = dims[cfg, 1]
        gt = gb * TPB + t  # thread index within this configuration's group
        gthreads = ngb * TPB
        for idx in range(t, NE, TPB):
            Esh[idx] = E_g[cfg, idx]
        cuda.syncthreads()
        ph = phase[cfg]
        steps = todo[cfg]
        ndone = steps
        st = COMPLETED
        for step in range(steps):
            if ph == 0:
                first_layer(True, cfg, gt, gthreads, A2, B2, F, S, Esh, G, dims, aoff, boff, foff, soff, eta)
                group_sync()
                for k in range(1, L):
                    up_layer(k, cfg, gb, ngb, t, V, A2, B2, F, Esh, red, out, dims, voff, aoff, boff,
                             foff, eta)
                    group_sync()
            else:
                if L == 1:  # f = Z: every block has read it for E before it is stepped
                    group_sync()
                for k in range(L - 1, 0, -1):
                    down_layer(k, L, cfg, gb, ngb, t, V, A2, B2, F, Esh, red, out, dims, voff, aoff,
                               boff, foff, eta)
                    group_sync()
                first_layer(False, cfg, gt, gthreads, A2, B2, F, S, Esh, G, dims, aoff, boff, foff, soff, eta)
                group_sync()
                # f(t+2)^T = Z(t+2)^T B'_1^T, one output per thread of the group.
                z = aoff[cfg, 1] + N * d1
                b1 = boff[cfg, 1] + DY * d1
                for idx in range(gt, NE, gthreads):
                    s = idx // DY
                    q = idx - s * DY
                    x = DT(0)
                    for c in range(d1):
                        x += A2[z + s * d1 + c] * B2[b1 + q * d1 + c]
                    ft_g[cfg, idx] = x
                group_sync()
            # E = f - Y and the loss, in every block alike (so all stop together).
            ftop = aoff[cfg, L] + N * DY
            for idx in range(t, NE, TPB):
                q = idx // N
                s = idx - q * N
                if ph == 0:
                    f = A2[ftop + s * DY + q]
                else:
                    f = ft_g[cfg, s * DY + q]
                Esh[idx] = f - Y[q, s]
            cuda.syncthreads()
            if t == 0:
                total = 0.0
                for idx in range(NE):
                    x64 = numba.float64(Esh[idx])
                    total += x64 * x64
                loss_sh[0] = 0.5 * total
                if gb == 0:
                    loss_out[cfg, step] = 0.5 * total
            cuda.syncthreads()
            loss = loss_sh[0]
            ph = 1 - ph
            if not math.isfinite(loss):
                st = DIVERGED
                ndone = step + 1
                break
            if loss <= loss_stop[cfg]:
                st = CONVERGED
                ndone = step + 1
                break
        if gb == 0:
            for idx in range(t, NE, TPB):
                E_g[cfg, idx] = Esh[idx]
            if t == 0:
                phase[cfg] = ph
                done[cfg] = ndone
                status[cfg] = st

    return step_kernel
