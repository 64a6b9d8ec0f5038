"""Register tiles of the nonlinear CPU kernel: every product of a step is one of these.

A step's three products per layer (forward W h, backward W^T delta, update
delta h^T) all have the form

    out[q, c] (=, or +=coef *) sum_{k<K} S[q, k] V[k, c],   q < 4 rows, c < 4 vectors,

with the 4 x 4 accumulators (4 rows of 4 explicit vectors of one cache
line each, llvm.Vec) in registers while k runs: per k, four vector loads
of V, four scalars of S broadcast, sixteen multiply-adds. On one core of
the CI machine (AMD EPYC, AVX-512, 32 vector registers) this runs at the
machine's multiply-add peak: 50 GFLOP/s in float64, 100 in float32, at
K = 256 with V in L2 (measured while writing it, against 49 per core for
NumPy's dgemm).

Operands are flat 1-D arrays with offsets and strides, so one kernel
serves every layout: S[q, k] = S[s0 + k sk + q sq], V[k, c] = the vector
at V[v0 + k vk + c W], out row q at o0 + q oq (W elements per vector).
"""

from ..options import serial
from ..llvm import load, madd, splat, store
from ..tuning import LINE_BYTES

# Vectors per tile row: four make 16 accumulators, leaving registers for
# the four loads and a broadcast (32 on AVX-512).
TILE_VECTORS = 4
TILE_ROWS = 4


@serial
def _put(out, o, acc, accumulate, coef):
    """out[o : o + W] = acc, or += coef * acc (one rounding: a fused multiply-add)."""
    if accumulate:
        store(out, o, madd(load(out, o), coef, acc))
    else:
        store(out, o, acc)


@serial
def tile4x4(S, s0, sk, sq, V, v0, vk, K, out, o0, oq, accumulate, coef):
    """One 4-row x 4-vector tile: out (=, or += coef *) sum_k S[q, k] V[k, :] (module docstring)."""
    W = LINE_BYTES // V.itemsize
    zero = splat(V.dtype.type(0))
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
    s, v = s0, v0
    for _ in range(K):
        x0, x1, x2, x3 = load(V, v), load(V, v + W), load(V, v + 2 * W), load(V, v + 3 * W)
        b = splat(S[s])
        a00, a01, a02, a03 = madd(a00, b, x0), madd(a01, b, x1), madd(a02, b, x2), madd(a03, b, x3)
        b = splat(S[s + sq])
        a10, a11, a12, a13 = madd(a10, b, x0), madd(a11, b, x1), madd(a12, b, x2), madd(a13, b, x3)
        b = splat(S[s + 2 * sq])
        a20, a21, a22, a23 = madd(a20, b, x0), madd(a21, b, x1), madd(a22, b, x2), madd(a23, b, x3)
        b = splat(S[s + 3 * sq])
        a30, a31, a32, a33 = madd(a30, b, x0), madd(a31, b, x1), madd(a32, b, x2), madd(a33, b, x3)
        s += sk
        v += vk
    c = splat(V.dtype.type(coef))
    o = o0
    _put(out, o, a00, accumulate, c)
    _put(out, o + W, a01, accumulate, c)
    _put(out, o + 2 * W, a02, accumulate, c)
    _put(out, o + 3 * W, a03, accumulate, c)
    o += oq
    _put(out, o, a10, accumulate, c)
    _put(out, o + W, a11, accumulate, c)
    _put(out, o + 2 * W, a12, accumulate, c)
    _put(out, o + 3 * W, a13, accumulate, c)
    o += oq
    _put(out, o, a20, accumulate, c)
    _put(out, o + W, a21, accumulate, c)
    _put(out, o + 2 * W, a22, accumulate, c)
    _put(out, o + 3 * W, a23, accumulate, c)
    o += oq
    _put(out, o, a30, accumulate, c)
    _put(out, o + W, a31, accumulate, c)
    _put(out, o + 2 * W, a32, accumulate, c)
    _put(out, o + 3 * W, a33, accumulate, c)


@serial
def tile4x1(S, s0, sk, sq, V, v0, vk, K, out, o0, oq, accumulate, coef):
    """``tile4x4`` for one vector per row (the vectors after the last whole tile)."""
    zero = splat(V.dtype.type(0))
    a0 = a1 = a2 = a3 = zero
    s, v = s0, v0
    for _ in range(K):
        x = load(V, v)
        a0 = madd(a0, splat(S[s]), x)
        a1 = madd(a1, splat(S[s + sq]), x)
        a2 = madd(a2, splat(S[s + 2 * sq]), x)
        a3 = madd(a3, splat(S[s + 3 * sq]), x)
        s += sk
        v += vk
    c = splat(V.dtype.type(coef))
    _put(out, o0, a0, accumulate, c)
    _put(out, o0 + oq, a1, accumulate, c)
    _put(out, o0 + 2 * oq, a2, accumulate, c)
    _put(out, o0 + 3 * oq, a3, accumulate, c)


@serial
def tile_row(S, s0, sk, sq, V, v0, vk, K, out, o0, oq, accumulate, coef, vectors):
    """Four rows x ``vectors`` vectors: whole 4 x 4 tiles, then 4 x 1 tiles for the rest."""
    W = LINE_BYTES // V.itemsize
    whole = vectors // TILE_VECTORS * TILE_VECTORS
    for c in range(0, whole, TILE_VECTORS):
        tile4x4(S, s0, sk, sq, V, v0 + c * W, vk, K, out, o0 + c * W, oq, accumulate, coef)
    for c in range(whole, vectors):
        tile4x1(S, s0, sk, sq, V, v0 + c * W, vk, K, out, o0 + c * W, oq, accumulate, coef)
