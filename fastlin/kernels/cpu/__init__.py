"""Numba CPU backend: the one-pass fused GD step (docs/design.md), on one thread or all.

The backend contract (``fastlin/kernels/__init__.py``): ``init_state``,
``run_steps``, ``weights``, ``chains``; and ``prepare`` (compile now).

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
matrix) on those rows, then the new chain through the new rows
(``tiles``). Going down, a layer whose rows are short
(COLUMNS_MAX_ROW_BYTES) is swept in column strips instead, each column's
chains whole (``strips``). So each weight is read from memory once and
written once per step; where a layer is too big for the caches, the next
tile is prefetched while the current one is worked on.

Threads (``threads``): a net wide enough is split into one range per thread
in every layer; a chunk of steps runs either on that many Python threads at
once, each running the one compiled kernel (``passes.run_chunk``) on its
range and meeting the others at a barrier between layers, or on one thread
sweeping all ranges, whichever measures faster; both give the same bits.
There is one compiled kernel per dtype, whatever the thread count.

The first layer: V_1 (d_1 x d_x) enters the loss only through Z = V_1 X
(d_1 x n), and its gradient steps eta_1 B_1^T E X^T lie in the row space of
X^T, so Z(t+1) = Z(t) - M(t) G with M = eta_1 B_1^T E and G = X^T X (n x n).
The kernel steps Z and accumulates S = sum_t M(t); V_1 itself is read only by
``weights`` (V_1(0) - S X^T). For the paper's data (d_x = 1024, n = 16) that
removes the largest layer of a narrow net from every step: at m = 32 it holds
half of all weights. The result is the same GD trajectory; only the rounding
differs (tested against the reference like every other layer).

Modules: ``layout`` (buffers and the named tuples the passes take), ``tiles``
(register-tile kernels, the upward sweep), ``strips`` (column-strip kernels,
the downward sweeps), ``passes`` (both passes and the loop over steps),
``threads`` (ranges, barrier, one-or-all choice).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from .. import host
from ..reference import half_squared_norm
from .layout import Data, Net, Scratch, line_aligned, row_stride
from .passes import prefix_chains, run_chunk, start_chains, suffix_chains
from .threads import FLAG_STRIDE, chooser, run_on_threads, splits

__all__ = ["State", "StoredWeights", "chains", "empty_weights", "init_state", "prepare", "run_steps", "splits",
           "weights"]


class State:
    """Flat buffers of the one-pass kernel and the pass direction of the next step.

    The first layer's weights stay as given in ``V`` (layer 0); the steps
    accumulate its total change as S (``S_T`` = S^T, (n, d_1)), and
    ``weights`` returns V_1 - S X^T. ``ranges``: row ranges per layer (one
    per thread for a net that ``splits``, else one); ``mode``: "auto" (timed
    choice between one thread and all), "one" or "all" (forced).
    """

    def __init__(self, V, X, Y, eta, ranges=None):
        dtype = V[0].dtype
        self.dims = np.array([X.shape[0]] + [Vi.shape[0] for Vi in V], dtype=np.int64)
        n, dy = X.shape[1], Y.shape[0]
        if isinstance(V, StoredWeights) and V.dtype == dtype and np.array_equal(V.dims, self.dims):
            self.V, self.voff = V.flat, V.voff  # already in place (``empty_weights``)
        else:
            self.V, self.voff = _weight_buffer(self.dims, dtype)
            for k, Vi in enumerate(V):
                self.stored(k)[:, :Vi.shape[1]] = Vi
        self.aoff = host.level_offsets(self.dims, 2 * n)
        self.boff = host.level_offsets(self.dims, 2 * dy)
        self.A2 = line_aligned(self.aoff[-1], dtype)
        self.B2 = line_aligned(self.boff[-1], dtype)
        # Y goes into the compiled kernels: an own, writable copy, because a
        # read-only Y (the sweeps' data are read-only) is another Numba type
        # and would compile every kernel a second time.
        self.X, self.Y = X, np.array(Y)
        self.eta = np.asarray(eta, dtype=dtype)
        dmax = int(self.dims.max())
        threads = numba.config.NUMBA_NUM_THREADS
        self.scratch = Scratch(
            E=np.zeros((threads, dy, n), dtype=dtype), ET=np.zeros((threads, n, dy), dtype=dtype),
            Cf=line_aligned((threads, n, dmax), dtype), Mf=line_aligned((threads, dy, dmax), dtype),
            S_T=line_aligned((n, self.dims[1]), dtype), M_T=line_aligned((n, self.dims[1]), dtype),
            parts=line_aligned((2, threads, 2 * dy * dmax), dtype),
            blks=line_aligned((threads, 2 * dy * dmax), dtype),
            fparts=np.zeros((threads, n, dy), dtype=dtype), f_T=np.zeros((threads, n, dy), dtype=dtype))
        self.E = self.scratch.E[0]
        self.G = np.ascontiguousarray(X.T @ X, dtype=dtype)
        self.flags = np.zeros(threads * FLAG_STRIDE, dtype=np.int64)
        self.results = np.zeros((threads, 3), dtype=np.int64)
        if ranges is None:
            ranges = numba.get_num_threads() if splits(self.dims) else 1
        self.ranges = max(1, min(int(ranges), threads))
        self.mode = "auto"
        self.chooser = chooser((tuple(self.dims), n, dtype.str), self.ranges)
        self.chunks_run = 0
        self.E[:] = self._start_chains(X, Y)
        self.scratch.ET[0][:] = self.E.T
        self.loss0 = half_squared_norm(self.E)
        self.phase = 0

    def _start_chains(self, X, Y):
        """The chains of step 0 (an upward pass) from the stored weights; returns E(0) = f(0) - Y.

        Level 0 of A2 is X^T in both halves (read by ``read_chains`` only),
        the top level of B2 the identity in both halves (the top of every
        downward pass). The upward pass of step 0 needs Z(0)^T = (V_1 X)^T in
        the new half of A2's level 1 and B_1(0)..B_L(0) in the new halves of
        B2: the kernel's own sweeps form them on the net's threads
        (``start_chains``), the prefix side in a buffer of n rows per level.
        Overflow is not an error here: a net that diverges at once gets a
        non-finite loss(0), which the driver reports as a status.
        """
        n, dy = X.shape[1], Y.shape[0]
        L = len(self.dims) - 1
        self._A_level(0)[:] = np.concatenate([X.T, X.T])
        self._B_level(L)[:] = np.concatenate([np.eye(dy)] * 2)
        A, aoff = _prefix_buffer(self.dims, X, self.V.dtype)
        T = _side_threads(self)
        flags = np.zeros(T * FLAG_STRIDE, dtype=np.int64)
        V, voff, dims, B2, boff = self.V, self.voff, self.dims, self.B2, self.boff
        run_on_threads(T, lambda t: start_chains(t, T, flags, V, voff, dims, A, aoff, n, B2, boff, 2 * dy, dy))
        self._A_level(1)[n:] = A[aoff[1]:aoff[2]].reshape(n, -1)
        with np.errstate(over="ignore", invalid="ignore"):
            return A[aoff[L]:aoff[L + 1]].reshape(n, dy).T - Y

    def _A_level(self, j):
        return self.A2[self.aoff[j]:self.aoff[j + 1]].reshape(-1, self.dims[j])

    def _B_level(self, j):
        return self.B2[self.boff[j]:self.boff[j + 1]].reshape(-1, self.dims[j])

    @property
    def net(self) -> Net:
        return Net(self.V, self.voff, self.dims, self.A2, self.aoff, self.B2, self.boff)

    @property
    def data(self) -> Data:
        return Data(self.Y, self.G, self.eta)

    def stored(self, k):
        """Layer k as stored (``layout.stored_layer``): its rows, then their padding."""
        return self.V[self.voff[k]:self.voff[k + 1]].reshape(self.dims[k + 1], -1)

    def layer(self, k):
        """V_{k+1} as it is now (a view, except for the first layer once steps have run)."""
        Vk = self.stored(k)[:, :self.dims[k]]
        if k == 0 and self.chunks_run > 0:  # (before any step S = 0)
            Vk = host.first_layer(Vk, self.scratch.S_T, self.X)
        return Vk


class StoredWeights(list):
    """Views V_1..V_L into one flat buffer laid out as ``State`` stores weights (``empty_weights``)."""

    def __init__(self, flat, voff, dims):
        self.flat, self.voff, self.dims, self.dtype = flat, voff, np.asarray(dims, dtype=np.int64), flat.dtype
        super().__init__(flat[voff[k]:voff[k + 1]].reshape(int(dims[k + 1]), -1)[:, :int(dims[k])]
                         for k in range(len(dims) - 1))


def _weight_buffer(dims, dtype):
    """A flat buffer for the layers of widths ``dims`` (rows padded where ``row_stride`` says, padding zero) and its offsets."""
    dtype = np.dtype(dtype)
    strides = [row_stride(int(d), dtype.itemsize) for d in dims[:-1]]
    voff = np.concatenate([[0], np.cumsum(np.asarray(dims[1:], dtype=np.int64) * strides)]).astype(np.int64)
    flat = line_aligned(voff[-1], dtype, zero=False)
    for k in range(len(dims) - 1):
        if strides[k] > dims[k]:
            flat[voff[k]:voff[k + 1]].reshape(int(dims[k + 1]), -1)[:, int(dims[k]):] = 0
    return flat, voff


def empty_weights(dims, dtype) -> StoredWeights:
    """Uninitialized V_1..V_L in the kernel's layout: fill them, then ``init_state`` adopts them without a copy."""
    dims = np.asarray(dims, dtype=np.int64)
    return StoredWeights(*_weight_buffer(dims, dtype), dims)


def init_state(V, X, Y, eta) -> State:
    return State(V, X, Y, eta)


def _chunk_threads(state: State) -> int:
    """Threads for the next chunk: 1 or state.ranges (never more than Numba may use now)."""
    R = state.ranges
    if R == 1 or state.mode == "one" or numba.get_num_threads() < R:
        return 1
    return R if state.mode == "all" else state.chooser.next()


def run_steps(state: State, loss_out, loss_stop: float):
    """Run a chunk of steps on one thread or on ``state.ranges`` threads; returns (steps done, status)."""
    net, data, scratch = state.net, state.data, state.scratch
    R = state.ranges
    T = _chunk_threads(state)
    scratch.E[1:R] = state.E
    scratch.ET[1:R] = scratch.ET[0]
    args = (state.flags, net, data, scratch, state.phase, loss_out, loss_stop)
    start = time.perf_counter()
    if T > 1:
        state.flags[:] = 0
        run_on_threads(T, lambda t: run_chunk(t, T, R, *args, state.results[t]))
    else:
        run_chunk(0, 1, R, *args, state.results[0])
    done, status, state.phase = (int(x) for x in state.results[0])
    # A state's first chunk is not timed: cores that idled while the state
    # was built run the next tens of milliseconds up to 2x slower on the
    # 2-core VM.
    if R > 1 and done > 0 and state.chunks_run > 0:
        state.chooser.record(T, (time.perf_counter() - start) / done)
    state.chunks_run += 1
    return done, status


def weights(state: State):
    """V_1..V_L now: views of the state's buffer (V_1 new once steps have run), valid until the next ``run_steps``."""
    return [state.layer(k) for k in range(len(state.dims) - 1)]


def _prefix_buffer(dims, X, dtype):
    """A flat buffer for the prefix chains transposed, level j (n, d_j), level 0 = X^T filled; and its offsets."""
    aoff = host.level_offsets(dims, X.shape[1])
    A = np.empty(aoff[-1], dtype=dtype)
    A[:aoff[1]] = X.T.ravel()
    return A, aoff


def _side_threads(state: State) -> int:
    """Threads for recomputing a side of the chains: the net's ranges, unless one thread is forced or fewer may run."""
    return state.ranges if state.mode != "one" and numba.get_num_threads() >= state.ranges else 1


def chains(state: State):
    """Chains at the current step: the cached side is read, the other recomputed by compiled sweeps."""
    V = [state.layer(k) for k in range(len(state.dims) - 1)]
    dims = state.dims
    T = _side_threads(state)
    flags = np.zeros(T * FLAG_STRIDE, dtype=np.int64)

    def prefix(V, X):
        n = X.shape[1]
        A, aoff = _prefix_buffer(dims, X, state.V.dtype)
        V1 = np.ascontiguousarray(V[0])
        run_on_threads(T, lambda t: prefix_chains(t, T, flags, state.V, state.voff, dims, V1, A, aoff, n))
        return [A[aoff[j]:aoff[j + 1]].reshape(n, -1).T for j in range(len(dims))]

    def suffix(V):
        dy = state.E.shape[0]
        boff = host.level_offsets(dims, dy)
        B = np.empty(boff[-1], dtype=state.V.dtype)
        B[boff[-2]:] = np.eye(dy).ravel()
        run_on_threads(T, lambda t: suffix_chains(t, T, flags, state.V, state.voff, dims, B, boff, dy, 0))
        levels = [B[boff[j]:boff[j + 1]].reshape(dy, -1) for j in range(len(dims))]
        levels[0] = levels[1] @ V[0]
        return levels

    return host.read_chains(V, state.X, state.phase, state._A_level, state._B_level, state.E, prefix, suffix)


def prepare(dtype="float64") -> None:
    """Compile the kernel for ``dtype`` now, or load it from Numba's cache.

    One compiled kernel serves every net and thread count; this runs a tiny
    net split among two threads for a few steps (both pass directions).
    """
    dtype = np.dtype(dtype)
    dims = [8, 64, 64, 2]
    rng = np.random.default_rng(0)
    V = [(rng.standard_normal((dims[k + 1], dims[k])) / dims[k]).astype(dtype) for k in range(len(dims) - 1)]
    X = rng.standard_normal((dims[0], 4)).astype(dtype)
    Y = rng.standard_normal((dims[-1], 4)).astype(dtype)
    state = State(V, X, Y, np.full(len(V), 1e-3), ranges=min(2, numba.config.NUMBA_NUM_THREADS))
    state.mode = "all"
    run_steps(state, np.empty(4), -np.inf)
