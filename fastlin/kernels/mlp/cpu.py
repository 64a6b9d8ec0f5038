"""Numba CPU backend for nonlinear chains (the contract of kernels/mlp/__init__.py).

The state holds the net and the buffers of one batch, padded and flat, and
the data as rows; the steps run in compiled sweeps (sweeps.py: two per
step, every weight read and written once per step, register tiles from
tiles.py), a chunk of steps per call, on one thread or all of them
(kernels/cpu/threads.py picks by timing; the results are the same bits either way).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from ..cpu.threads import FLAG_STRIDE, chooser, run_on_threads
from ..tuning import LINE_BYTES
from . import Setup
from .batches import seed_state
from .sweeps import Buffers, Data, Net, Run, count_thread, run_thread


def _aligned_zeros(size, dtype):
    """Zeros whose first element starts a cache line, so that every vector the tiles load is one line."""
    dtype = np.dtype(dtype)
    buf = np.zeros(size + LINE_BYTES // dtype.itemsize, dtype=dtype)
    start = (-buf.ctypes.data % LINE_BYTES) // dtype.itemsize
    return buf[start:start + size]


def _offsets(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class State:
    """Padded flat weights, the buffers of one batch and the data as rows (module docstring)."""

    def __init__(self, weights, biases, X, Y, setup: Setup):
        dtype = X.dtype
        lanes = LINE_BYTES // dtype.itemsize
        self.dims = np.array([X.shape[0]] + [W.shape[0] for W in weights], dtype=np.int64)
        pdims = -(-self.dims // lanes) * lanes
        n = X.shape[1]
        batch = setup.batch_size or n
        columns = -(-batch // lanes) * lanes
        woff = _offsets(pdims[1:] * pdims[:-1])
        boff = _offsets(pdims[1:])
        self.net = Net(_aligned_zeros(woff[-1], dtype), woff, _aligned_zeros(boff[-1], dtype), boff,
                       self.dims, pdims)
        for k, (W, b) in enumerate(zip(weights, biases)):
            self._layer(k)[:W.shape[0], :W.shape[1]] = W
            self.net.b[boff[k]:boff[k] + b.size] = b
        hoff = _offsets(columns * pdims[:-1])
        widest = int(pdims.max())
        self.bufs = Buffers(_aligned_zeros(hoff[-1], dtype), hoff, _aligned_zeros(pdims[0] * columns, dtype),
                            _aligned_zeros(widest * columns, dtype), _aligned_zeros(widest * columns, dtype),
                            _aligned_zeros(2 * widest * columns, dtype).reshape(2, -1),
                            _aligned_zeros(widest, np.float64))
        XT = _aligned_zeros(n * pdims[0], dtype).reshape(n, pdims[0])
        XT[:, :X.shape[0]] = X.T
        self.data = Data(XT, np.ascontiguousarray(Y.T), np.arange(n, dtype=np.int64), seed_state(setup.seed),
                         np.zeros(columns))
        self.run = Run(setup.activation, setup.loss, dtype.type(setup.lr), batch, columns,
                       setup.batch_size != 0, bool(setup.train_biases))
        self.result = np.zeros(2, dtype=np.int64)
        self.shared = np.zeros(2)
        self.flags = np.zeros(numba.config.NUMBA_NUM_THREADS * FLAG_STRIDE, dtype=np.int64)
        # One thread or all for the next chunk, by timing (kernels/cpu/threads.py):
        # on a shared machine all threads can be slower than one, as every
        # barrier waits for the slowest.
        self.shape_key = ("mlp", tuple(int(d) for d in self.dims), batch, dtype.str)
        # "auto" (the chooser's pick), "one" or "all" (forced).
        self.mode = "auto"
        self.chunks_run = 0
        loss = np.empty(1)
        self._chunk(loss, True)
        self.loss0 = float(loss[0])

    def _layer(self, k):
        net = self.net
        return net.W[net.woff[k]:net.woff[k + 1]].reshape(net.pdims[k + 1], net.pdims[k])

    def threads(self) -> int:
        """Threads for the next chunk: 1 or all that Numba may use now (the chooser's pick)."""
        T = numba.get_num_threads()
        if self.mode == "one" or T == 1:
            return 1
        return T if self.mode == "all" else chooser(self.shape_key, T).next()

    def _chunk(self, loss_out, start):
        T = self.threads()
        tick = time.perf_counter()
        self.flags[:] = 0
        args = (self.flags, self.net, self.bufs, self.data, self.run, loss_out, self.shared, self.result, start)
        run_on_threads(T, lambda t: run_thread(t, T, *args))
        # The first chunks of a state are not timed: cores that idled while it
        # was built run the next tens of milliseconds slower (docs/performance.md).
        if self.chunks_run > 1 and self.result[0] > 0:
            chooser(self.shape_key, numba.get_num_threads()).record(T, (time.perf_counter() - tick) / self.result[0])
        self.chunks_run += 1


def init_state(weights, biases, X, Y, setup: Setup) -> State:
    return State(weights, biases, X, Y, setup)


def run_steps(state: State, loss_out):
    state._chunk(loss_out, False)
    return int(state.result[0]), int(state.result[1])


def accuracy(state: State, X, labels) -> float:
    """Fraction of correct columns of X, in chunks of the batch's size; h^T and delta untouched."""
    net, run = state.net, state.run
    n = X.shape[1]
    XT = _aligned_zeros(n * net.pdims[0], X.dtype).reshape(n, net.pdims[0])
    XT[:, :X.shape[0]] = X.T
    data = Data(XT, state.data.YT, np.zeros(min(n, run.columns), dtype=np.int64), state.data.rng,
                state.data.per_sample)
    # Ha and Hb hold nothing between steps; H0 may hold the full batch, so the inputs go elsewhere.
    H0 = _aligned_zeros(net.pdims[0] * run.columns, X.dtype)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    shared = np.zeros(2)
    T = state.threads()
    state.flags[:] = 0
    run_on_threads(T, lambda t: count_thread(t, T, state.flags, net, state.bufs, data, run, H0, labels, shared))
    return float(shared[0]) / n


def weights(state: State):
    return [state._layer(k)[:state.dims[k + 1], :state.dims[k]].copy() for k in range(len(state.dims) - 1)]


def biases(state: State):
    net = state.net
    return [net.b[net.boff[k]:net.boff[k] + state.dims[k + 1]].copy() for k in range(len(state.dims) - 1)]
