"""Memory layout of the CPU kernel: the flat weight buffer, the chain levels, the named tuples the passes take.

* Weights: all V_i in one flat buffer ``V``, layer k (V_{k+1}) at
  ``voff[k]``, d_{k+1} rows of ``row_stride(d_k)`` elements, the first d_k
  of them the row. Rows of a layer swept in column strips that are a
  multiple of PAD_ROW_BYTES long get one unused cache line more, so that a
  strip's lines spread over all cache sets instead of two.
* Chains, stored transposed with both halves of a level in one block, level
  j = 0..L: ``A2`` level j is (2n, d_j): rows 0..r-1 the old chain's "old
  rows" (E A^T if d_y <= n (r = d_y), else A (r = n); valid during an
  upward pass only), rows n..2n-1 the new chain A'. ``B2`` level j is
  (2 d_y, d_j): rows 0..d_y-1 the old B, d_y..2d_y-1 the new B'. Level 1 of
  ``A2`` holds Z^T = (V_1 X)^T, through which the first layer is stepped.
* Every buffer the sweeps load strips from starts on a cache line
  (``line_aligned``).
"""

from typing import NamedTuple

import numpy as np

from ..options import serial
from ..tuning import COLUMNS_MAX_ROW_BYTES, DOWN_BYTES, DOWN_ROWS, LINE_BYTES, PAD_ROW_BYTES


class Net(NamedTuple):
    """Weights and chains of one net (see the module docstring); offsets and dims int64."""

    V: np.ndarray       # all layers, flat; layer k (V_{k+1}) at voff[k]
    voff: np.ndarray    # (L + 1,) start of each layer in V
    dims: np.ndarray    # (L + 1,) d_0..d_L
    A2: np.ndarray      # prefix chain levels, flat
    aoff: np.ndarray    # (L + 2,) start of each level in A2
    B2: np.ndarray      # suffix chain levels, flat
    boff: np.ndarray    # (L + 2,) start of each level in B2


class Data(NamedTuple):
    """What the steps read and never write."""

    Y: np.ndarray       # (d_y, n) targets
    G: np.ndarray       # (n, n) X^T X, through which the first layer's Z = V_1 X is stepped
    eta: np.ndarray     # (L,) per-layer rates eta_i = lr / d_i


class Scratch(NamedTuple):
    """Working buffers; those with a leading thread axis are one per thread."""

    E: np.ndarray       # (threads, d_y, n) residual f - Y
    ET: np.ndarray      # (threads, n, d_y) its transpose
    Cf: np.ndarray      # (threads, n, d_max) gradient factor C = eta E^T B (d_y > n)
    Mf: np.ndarray      # (threads, d_y, d_max) gradient factor M = E A^T of a downward layer (d_y <= n)
    S_T: np.ndarray     # (n, d_1) S^T, the first layer's accumulated change (columns split among threads)
    M_T: np.ndarray     # (n, d_1) M^T = (eta_1 B_1^T E)^T of the first layer's current step
    parts: np.ndarray   # (2, threads, 2 d_y d_max) partial chains of a downward layer split by rows (two sets, alternating)
    blks: np.ndarray    # (threads, 2 d_y d_max) a downward row sweep's chain accumulator
    fparts: np.ndarray  # (threads, n, d_y) partial outputs f^T, one per range
    f_T: np.ndarray     # (threads, n, d_y) summed output f^T


@serial
def swept_by_columns(din, itemsize):
    """Whether a downward layer of rows ``din`` long is swept (and split among threads) by columns, not rows."""
    return din * itemsize <= COLUMNS_MAX_ROW_BYTES


@serial
def row_stride(din, itemsize):
    """Elements from one stored row of a (., din) layer to the next: din, plus a cache line where PAD_ROW_BYTES says."""
    if swept_by_columns(din, itemsize) and din * itemsize % PAD_ROW_BYTES == 0:
        return din + LINE_BYTES // itemsize
    return din


@serial
def down_block_rows(din, itemsize):
    """Rows per block of a downward sweep over a (., din) matrix: DOWN_BYTES of them, at least DOWN_ROWS."""
    return max(DOWN_ROWS, DOWN_BYTES // (din * itemsize))


@serial
def stored_layer(V, voff, dims, k):
    """Layer k (V_{k+1}) as stored: (d_{k+1}, row_stride(d_k)), the row in its first d_k columns."""
    return V[voff[k]:voff[k + 1]].reshape((dims[k + 1], row_stride(dims[k], V.itemsize)))


@serial
def level(buf, off, dims, j, rows):
    """Level j of a chain buffer: (rows, d_j)."""
    return buf[off[j]:off[j + 1]].reshape((rows, dims[j]))


def line_aligned(shape, dtype, zero=True):
    """A new array (zeros, or uninitialized) whose first element starts a cache line (LINE_BYTES).

    NumPy starts a large buffer 16 bytes into a page, so every row of a
    layer or chain would start 16 bytes into a line, and each one-line
    vector a strip kernel loads (``llvm.load``) would span two lines.
    Starting the buffers on a line (rows of a multiple of LINE_BYTES then
    all do) made one core's downward sweeps markedly faster at m = 64 and
    256 (docs/performance.md). The buffer comes from ``np.empty``, so NumPy
    still advises huge pages for a large one.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = np.empty(size + LINE_BYTES // dtype.itemsize, dtype=dtype)
    start = (-buf.ctypes.data % LINE_BYTES) // dtype.itemsize
    out = buf[start:start + size].reshape(shape)
    if zero:
        out[...] = 0
    return out
